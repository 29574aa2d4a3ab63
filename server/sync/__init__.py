"""The sync core: documents, the encrypted update log, snapshots, transcripts, settings
registers, and the real-time websocket with its fan-out across replicas."""
