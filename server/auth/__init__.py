"""Identity: e-mail one-time codes, access and refresh tokens, devices."""
