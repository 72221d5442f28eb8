"""A FastAPI JSON endpoint (the shape `fastapi` of the HTTP benchmark)."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict[str, object]:
    return {"message": "Hello, world!", "id": 42}
