"""`kws demo`: a local web page that hears a model live (microphone or a dropped WAV).

`server.py` holds the ASGI app (starlette) and the per-connection session (a stateful
`kws_core.streaming.session.StreamingSession` and RecognizeCommands); `static/` holds the page
and its hand-written JS, served by the package itself.
"""
