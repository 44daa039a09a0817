"""A local stand-in for the Greengrass Nucleus's IPC pub/sub (stdlib only; not shipped to devices)."""
