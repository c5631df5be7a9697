"""The app tests reuse the index tests' world: synthetic mp4 videos, tiny-model adapters, a config."""
from tests.index.conftest import index_model, index_world  # noqa: F401 - fixtures
