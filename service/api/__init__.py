"""The web layer (FastAPI only): app factory (app.py), deps, errors, schemas, uploads, one router per resource."""
