"""A Flask JSON endpoint, WSGI (the shape `flask` of the HTTP benchmark)."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def root() -> dict[str, object]:
    return {"message": "Hello, world!", "id": 42}
