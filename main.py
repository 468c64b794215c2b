"""Entry point for `uvicorn main:app --reload` (the seed's way to start the server)."""

from vision_trainer.api.app import create_app

app = create_app()
