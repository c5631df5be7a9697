"""Text side data: prompt templates, readable class names and spatial/temporal descriptions (load, check, render),
the importer for published number-keyed description files, and the optional LLM description generator.

Nothing here tokenizes or imports open_clip at import time; the model does the tokenizing.
"""
from msta.text.importer import (export_numbered_descriptions, import_descriptions, read_class_table,
                                read_numbered_descriptions)
from msta.text.prompts import (CLIP_CONTEXT_LENGTH, PromptError, PromptSet, check_lengths, ensemble_embeddings,
                               load_prompts, load_templates, open_clip_token_counter, prompts_from_config, raw_to_name,
                               read_prompts_file, render_prompts, validate_template, write_prompts_file)

__all__ = [
    "CLIP_CONTEXT_LENGTH", "PromptError", "PromptSet", "check_lengths", "ensemble_embeddings",
    "export_numbered_descriptions", "import_descriptions", "load_prompts", "load_templates",
    "open_clip_token_counter", "prompts_from_config", "raw_to_name", "read_class_table", "read_numbered_descriptions",
    "read_prompts_file", "render_prompts", "validate_template", "write_prompts_file",
]
