from tilecast.cli import app

app()
