"""SoundSCaper companion: soundscape captioning with SoundAQnet, ISO 532-1 loudness and an LLM."""
__version__ = "0.1.0"
