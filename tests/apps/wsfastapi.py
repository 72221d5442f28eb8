"""A FastAPI app with a WebSocket route, for the end-to-end test."""

import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/")
def index() -> dict[str, str]:
    return {"served": "http"}


@app.websocket("/chat/{room}")
async def chat(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"room": room, "echo": data, "pid": os.getpid()})
    except WebSocketDisconnect as exc:
        print(f"fastapi disconnect {exc.code}", flush=True)


@app.websocket("/private")
async def private(websocket: WebSocket) -> None:
    await websocket.send_denial_response(PlainTextResponse("members only", status_code=418))
