"""The bundled reference model server: an OpenAI-compatible service with known answers, for demos and tests."""
