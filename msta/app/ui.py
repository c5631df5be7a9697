"""The page itself (Gradio): a checkpoint menu, a "Classify a video" tab and a "Search an index" tab.

Layout only; every action is a ``msta.app.backend.Backend`` method. Element ids (``elem_id``) are stable names that
the browser test finds: ckpt, video, video_path, labels, classify_btn, probs, frames, index, query, topk,
search_btn, results, message.
"""
from __future__ import annotations

import logging
from typing import Optional

from msta.app.backend import Backend

__all__ = ["build_page"]

_logger = logging.getLogger(__name__)

_INTRO = ("**msta** on your own videos. *Classify*: upload or name a video, type class names, see the ranked "
          "probabilities and the frames the model sampled. *Search*: type what to look for in an index built with "
          "`msta index DIR --out INDEX` (the search uses the checkpoint the index was built with).")


def _message(e: Exception) -> str:
    from msta.cli.common import user_error_message

    text = user_error_message(e)
    if text is None:
        _logger.exception("the page's action failed")
        text = f"{type(e).__name__}: {e}"
    return f"**Error:** {text}"


def build_page(backend: Backend, *, title: str = "msta: your own videos"):
    """Builds the Gradio ``Blocks`` page (not launched).

    Args:
        backend: what the page's buttons call.
        title: the browser tab's title.
    """
    import gradio as gr

    def classify(choice: str, uploaded: Optional[str], path: str, labels: str):
        video = uploaded or (path or "").strip()
        try:
            result = backend.classify(choice, video, labels)
        except Exception as e:  # noqa: BLE001 - shown on the page; the server keeps serving
            return {}, [], _message(e)
        frames = [(f, f"frame {i + 1}") for i, f in enumerate(result.frames)]
        return dict(result.ranked), frames, f"classified `{video}`"

    def search(index: str, query: str, topk: float):
        try:
            hits = backend.search((index or "").strip(), query, int(topk))
        except Exception as e:  # noqa: BLE001 - shown on the page
            return [], _message(e)
        return hits, f"{len(hits)} videos for *{query.strip()}*"

    with gr.Blocks(title=title) as page:
        gr.Markdown(_INTRO)
        ckpt = gr.Dropdown(backend.choices, value=backend.choices[0], label="Checkpoint (adapters)",
                           allow_custom_value=True, elem_id="ckpt")
        message = gr.Markdown("", elem_id="message")
        with gr.Tab("Classify a video", elem_id="tab_classify"):
            with gr.Row():
                with gr.Column():
                    video = gr.Video(label="Upload a video", sources=["upload"], elem_id="video")
                    path = gr.Textbox(label="... or the path of a video on this machine", elem_id="video_path")
                    labels = gr.Textbox(label="Class names (comma-separated)", elem_id="labels",
                                        placeholder="juggling, knitting, skiing")
                    classify_btn = gr.Button("Classify", variant="primary", elem_id="classify_btn")
                with gr.Column():
                    probs = gr.Label(label="Probabilities", num_top_classes=10, elem_id="probs")
                    frames = gr.Gallery(label="Frames the model sampled", columns=4, height="auto",
                                        elem_id="frames")
        with gr.Tab("Search an index", elem_id="tab_search"):
            with gr.Row():
                index = gr.Dropdown(backend.indexes, value=backend.indexes[0] if backend.indexes else None,
                                    label="Index file", allow_custom_value=True, elem_id="index")
                query = gr.Textbox(label="Look for", placeholder="a dog catching a frisbee", elem_id="query")
                topk = gr.Slider(1, 50, value=8, step=1, label="Results", elem_id="topk")
            search_btn = gr.Button("Search", variant="primary", elem_id="search_btn")
            results = gr.Gallery(label="Best matches", columns=4, height="auto", elem_id="results")
        classify_btn.click(classify, [ckpt, video, path, labels], [probs, frames, message])
        search_btn.click(search, [index, query, topk], [results, message])
        query.submit(search, [index, query, topk], [results, message])
    return page
