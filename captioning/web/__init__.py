"""The web page and HTTP API (``serve``): FastAPI on uvicorn around one loaded Captioner.

``app.create_app`` builds the app (page, API, docs) around a loaded captioner;
``server.serve`` loads the model, binds the address and runs uvicorn until Ctrl-C. Nothing here is
imported by the rest of the package, and this package uses only the public functions of the
others, so it can move as a unit.
"""
