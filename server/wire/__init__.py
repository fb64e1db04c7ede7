"""The wire format: message schema and validation, replies, pixel formats and pixel files."""
