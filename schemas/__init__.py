"""The JSON Schemas and the code that reads events against them (a leaf for stream and model)."""
