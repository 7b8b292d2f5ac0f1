"""``yofo serve``: a local web page (Gradio) that segments a video from sentences with a checkpoint.

    from yofo.serve import Limits, build_app
    app = build_app("checkpoints/yofo-synthetic.safetensors", Limits())
    app.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1")   # what `yofo serve` does

The page shows the checkpoint and what it was trained on (:func:`yofo.engine.checkpoint.checkpoint_info`),
takes an upload (mp4/mov/webm/avi/mkv or a jpg/png image) or one of a few example videos synthesized at
start-up from the synthetic benchmark (a ``yofo synth`` folder in a temporary directory, nothing shipped),
and one sentence per line. Segment runs :func:`yofo.predictor.segment_to_folder` (the same as ``yofo
segment``: one :class:`yofo.predictor.VideoSegmenter` per model, one request at a time), showing the frames
done on the page, then shows the overlay video and offers the palette PNGs as a zip. Runs can be cancelled.

Bad input (a corrupt upload, no sentence, a video over the frame limit) is a message on the page; the
server goes on serving. Uploads are refused above ``Limits.max_upload_mb``. Results live in a temporary
folder per request, removed when the next request of the page starts and when the server stops; Gradio's
own copies are removed after an hour (``delete_cache``). Gradio's analytics are off and no share link is
made; nothing on the page loads from the network.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reads it then

from yofo.errors import InputError, YofoError  # noqa: E402
from yofo.files import file_sha256  # noqa: E402

EXAMPLES = 3  # example videos synthesized at start-up
EXAMPLE_FPS = 8.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    Attributes:
        max_upload_mb: largest upload accepted.
        max_frames: longest video (frames after decoding); longer ones are refused with a message.
    """

    max_upload_mb: float = 100.0
    max_frames: int = 600


def parse_sentences(text: str | None) -> list[str]:
    """One sentence per non-blank line.

    Raises:
        InputError: no sentence, or a sentence given twice.
    """
    from yofo.predictor import check_texts

    sentences = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not sentences:
        raise InputError("enter at least one sentence (one per line) describing the object to segment")
    return check_texts(sentences)


def model_card(checkpoint: str | Path) -> str:
    """Markdown for the page's header: the checkpoint, its sha256 and what it was trained on."""
    from yofo.engine.checkpoint import checkpoint_info

    info = checkpoint_info(checkpoint)
    trained_on = info["trained_on"]
    lines = [f"**Checkpoint** `{info['checkpoint']}` ({info['size_bytes'] / 1e6:.1f} MB, sha256 "
             f"`{info['sha256'][:12]}…`)  ", f"**Trained on** {trained_on['summary']}"]
    if trained_on["synthetic_only"]:
        lines.append("\n> This model knows only the synthetic benchmark's coloured shapes: on real video expect poor "
                     "or empty masks. Try the examples below.")
    return "\n".join(lines)


def write_examples(folder: Path, size: tuple[int, int], count: int = EXAMPLES) -> list[tuple[Path, str]]:
    """Synthesize ``count`` benchmark videos into ``folder`` (a ``yofo synth`` benchmark) and write each as an mp4
    inside it; returns ``(mp4, sentences)`` with the first expression of each object, one per line."""
    from yofo.data.records import read_frame
    from yofo.data.synthetic import synthesize
    from yofo.data.ytvos import load_ytvos
    from yofo.video_io import Mp4Writer

    synthesize(folder, train=0, valid=count, seed=1, size=size, frames=16)
    examples = []
    for video in load_ytvos(folder, "valid"):
        path = folder / "examples" / f"{video.name}.mp4"
        with Mp4Writer(path, fps=EXAMPLE_FPS) as writer:
            for frame in video.frame_paths:
                writer.write(read_frame(frame))
        first: dict[int, str] = {}
        for expression in video.expressions:
            first.setdefault(expression.obj_id, expression.text)
        examples.append((path, "\n".join(first[k] for k in sorted(first))))
    return examples


class Cancelled(Exception):
    """The page cancelled the request."""


class Segmentation:
    """The request handler: one model, one request at a time, one temporary folder per page session."""

    def __init__(self, checkpoint: str | Path, limits: Limits, scratch: Path, examples: list[tuple[Path, str]]):
        from yofo.engine.checkpoint import load_model
        from yofo.predictor import VideoSegmenter

        self.segmenter = VideoSegmenter(load_model(checkpoint), device="cpu")
        self.limits = limits
        self.scratch = scratch
        # Gradio hands the handler a copy of an example in its cache: recognise it by content.
        self.examples = {file_sha256(path): path for path, _ in examples}
        self.lock = threading.Lock()  # the segmenter holds one video's state

    def _frames(self, source, progress: dict, stop: threading.Event) -> Iterator[tuple[str, Any]]:
        limit = self.limits.max_frames
        if source.num_frames is not None and source.num_frames > limit:
            raise InputError(f"the video has {source.num_frames} frames; this server takes at most {limit}")
        progress["total"] = source.num_frames
        for index, item in enumerate(source.iter_named()):
            progress["done"] = index
            if index >= limit:
                raise InputError(f"the video has more than {limit} frames; this server takes at most {limit}")
            if stop.is_set():
                raise Cancelled
            yield item

    def __call__(self, upload: str | None, sentences: str, state: dict, progress: dict,
                 stop: threading.Event) -> tuple[str, str, str]:
        """Segment ``upload`` (a path) with the sentences; returns (message, overlay.mp4, masks.zip).

        ``progress`` gets ``done`` and ``total`` frames as the run goes; ``stop`` set: the run ends at the next
        frame (:class:`Cancelled`)."""
        from yofo.predictor import segment_to_folder
        from yofo.video_io import open_video

        if not upload:
            raise InputError("upload a video or an image, or pick an example")
        texts = parse_sentences(sentences)
        source = open_video(upload)
        footage = self.examples.get(file_sha256(upload), Path(upload))
        previous = state.get("folder")
        if previous:  # this page's previous result: the browser has shown it
            shutil.rmtree(previous, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix="request-", dir=self.scratch))
        state["folder"] = str(folder)
        masks = folder / "masks"
        masks.mkdir()
        with self.lock:
            notice = self.segmenter.check_footage(footage)
            count = segment_to_folder(self.segmenter, self._frames(source, progress, stop), texts, masks,
                                      source.fps or EXAMPLE_FPS, name=Path(upload).name)
        overlay = folder / "overlay.mp4"
        (masks / "overlay.mp4").rename(overlay)
        archive = folder / "masks.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for png in sorted(masks.iterdir()):
                zf.write(png, png.name)
        legend = ", ".join(f"{k}. “{t}”" for k, t in enumerate(texts, 1))
        message = f"Segmented {count} frame(s) with {len(texts)} sentence(s): {legend}."
        if notice:
            message += f"\n\n> {notice}"
        return message, str(overlay), str(archive)


def build_app(checkpoint: str | Path, limits: Limits = Limits(), scratch: str | Path | None = None):
    """The Gradio page (a ``gr.Blocks``; call ``.queue(...).launch(...)`` on it).

    Args:
        checkpoint: the model to serve.
        limits: upload and video-length limits.
        scratch: folder for examples and results (default: a new temporary folder, removed at exit).

    Raises:
        CheckpointError: the checkpoint cannot be read.
    """
    import gradio as gr

    from yofo.engine.checkpoint import checkpoint_model_config

    size = tuple(checkpoint_model_config(checkpoint).input_size)
    scratch = Path(scratch if scratch is not None else tempfile.mkdtemp(prefix="yofo-serve-"))
    examples = write_examples(scratch / "examples", size)
    handler = Segmentation(checkpoint, limits, scratch, examples)

    # Cancel counts its presses in the page session's state (one dict per session, handed to every event by
    # reference); a click on Segment first takes the count as its ticket, and its run stops at the next frame
    # once the count has moved on, queued or running, then says so itself. (Gradio's own `cancels=` closes the
    # generator, and the page could then show the closed event's "Error" over a cancel handler's message.)
    def ticket(state):
        return state.get("cancels", 0)

    def cancel_runs(state):
        state["cancels"] = state.get("cancels", 0) + 1

    def segment(upload, sentences, state, issued):
        # The work runs in a thread while this generator reports its progress and watches for Cancel, which
        # stops the work at its next frame.
        stop, outcome, progress = threading.Event(), {}, {"done": 0, "total": None}
        if ticket(state) != issued:  # cancelled while queued
            yield "Cancelled.", gr.skip(), gr.skip(), gr.skip()
            return

        def work() -> None:
            try:
                outcome["result"] = handler(upload, sentences, state, progress, stop)
            except Cancelled as err:
                print(f"request cancelled at frame {progress['done']}", flush=True)
                outcome["error"] = err
            except BaseException as err:  # noqa: BLE001 - handed to the page below
                outcome["error"] = err

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.25)
                if ticket(state) != issued:
                    stop.set()
                elif worker.is_alive():
                    total = f"/{progress['total']}" if progress["total"] else ""
                    yield f"Segmenting… frame {progress['done']}{total}", gr.skip(), gr.skip(), gr.skip()
        finally:
            stop.set()
            worker.join()
        error = outcome.get("error")
        if isinstance(error, Cancelled):
            yield "Cancelled.", gr.skip(), gr.skip(), gr.skip()
            return
        if isinstance(error, YofoError):  # bad input: a message on the page, not a traceback
            # name the upload as the user knows it, not by the server's copy of it
            text = str(error).replace(str(upload), Path(upload).name) if upload else str(error)
            raise gr.Error(text, print_exception=False)
        if error is not None:
            raise error
        yield *outcome["result"], state

    with gr.Blocks(title="yofo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("# yofo: segment what a sentence describes\n" + model_card(checkpoint))
        state = gr.State({})
        with gr.Row():
            with gr.Column():
                upload = gr.File(label=f"Video or image (at most {limits.max_upload_mb:g} MB, {limits.max_frames} frames)",
                                 file_types=[".mp4", ".mov", ".webm", ".avi", ".mkv", ".jpg", ".jpeg", ".png"],
                                 elem_id="upload")
                sentences = gr.Textbox(label="Sentences, one per line (object k = line k)", lines=3,
                                       placeholder="the red circle\nthe square moving left", elem_id="sentences")
                with gr.Row():
                    run = gr.Button("Segment", variant="primary", elem_id="segment")
                    cancel = gr.Button("Cancel", elem_id="cancel")
                gr.Examples([[str(path), text] for path, text in examples], inputs=[upload, sentences],
                            label="Examples from the synthetic benchmark")
            with gr.Column():
                message = gr.Markdown(elem_id="message")
                overlay = gr.Video(label="Overlay (masks in each sentence's colour)", elem_id="overlay",
                                   interactive=False)
                archive = gr.File(label="Masks: palette PNGs, object k = sentence k (zip)", elem_id="masks",
                                  interactive=False)
        issued = gr.State(0)
        run.click(ticket, state, issued, concurrency_limit=None).then(
            segment, [upload, sentences, state, issued], [message, overlay, archive, state], concurrency_limit=1)
        cancel.click(cancel_runs, state, None, concurrency_limit=None)
    return app


def serve(checkpoint: str | Path, host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits()) -> None:
    """Build the page and serve it until interrupted; the temporary folder is removed on exit.

    Gradio's own copies of uploads and results go into that folder too (``GRADIO_TEMP_DIR``, which Gradio
    reads when it is imported: here, unless the process imported it before).
    """

    def stop(signum, frame):  # `kill`: stop as on Ctrl-C, so that the temporary folder is removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with tempfile.TemporaryDirectory(prefix="yofo-serve-") as scratch:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(scratch) / "gradio")
        import gradio as gr

        # System fonts only: the default theme would fetch its fonts from the network.
        theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                  font_mono=["ui-monospace", "monospace"])
        app = build_app(checkpoint, limits, scratch)
        app.queue(default_concurrency_limit=1, max_size=16).launch(
            server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False, mcp_server=False,
            max_file_size=int(limits.max_upload_mb * 1e6), allowed_paths=[scratch], theme=theme, footer_links=[],
            quiet=True, prevent_thread_lock=True,
        )
        print(f"serving {checkpoint} on http://{host}:{port} (Ctrl-C to stop)", flush=True)
        try:
            app.block_thread()  # until Ctrl-C
        finally:
            app.close()
