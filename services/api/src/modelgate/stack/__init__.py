"""The native stack: what ``docker compose up`` runs, as supervised local processes on
loopback, rendered from the same ``infra/`` files."""
