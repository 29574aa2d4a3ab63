"""Domain-free helpers: secrets and tokens, JWTs, rate limits, client addresses, time."""
