"""The personalised generator panel of chapter 12b: your drawings in, new drawings out.

A person uploads a few drawings of one character (a photo of their handwriting, a scan, a
drawing) or picks a bundled example; the panel prepares them
(:mod:`mlcourse.metagen.personal`) and shows them *before* anything trains, adapts a
meta-learned generator to them with a progress bar, shows a grid of new samples and offers
it as a PNG download. Everything stays in memory: the download is a ``data:`` link that
holds the PNG itself, and no callback opens a file.

The logic is plain functions (:func:`generate_with_progress`, :func:`grid_png`,
:func:`download_html`, :func:`messages_html`); :class:`GeneratorPanel` only wires them to
widgets, and its callbacks (``on_upload``, ``on_example``, ``on_generate``) run headless, as
the tests do, by setting ``panel.upload.value`` or calling them.

How the progress bar knows how far adaptation is
------------------------------------------------
:meth:`~mlcourse.metagen.ReptileGAN.generate` adapts with its own inner loop and reports
nothing while it runs. Every inner iteration ends with optimiser steps (``n_critic`` on
the critic, one on the generator), so a global *optimiser step hook* (PyTorch's
``register_optimizer_step_post_hook``), registered only for the duration of the call,
counts them: the images are exactly those of ``model.generate`` (tested), and the bar moves
once per iteration. The same hook asks ``should_stop()``, which is how *Stop* works; it counts
only the optimiser steps of the thread that called it.

Why a thread for Stop
---------------------
The kernel handles one message at a time: while a button's callback runs, a click on another
button waits until the callback returns. With ``background=True`` the panel adapts in a thread
of its own, the kernel stays free to receive *Stop*, and widget updates from that thread reach
the browser as usual; ``panel.wait()`` joins it.
"""

from __future__ import annotations

import base64
import html
import inspect
import math
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_post_hook

from .personal import LIMITS, PreparedUpload, UploadLimits, describe, digit_examples, omniglot_examples, prepare_upload

Progress = Callable[[int, "int | None"], None]


# ---------------------------------------------------------------------------------------
# Plain functions
# ---------------------------------------------------------------------------------------
def iterations_per_step(model) -> int | None:
    """Optimiser steps per adaptation iteration: ``n_critic + 1`` for the GANs of chapter 09
    (critic steps, then one generator step), ``None`` when the model does not say."""
    n_critic = getattr(model, "n_critic", None)
    return int(n_critic) + 1 if isinstance(n_critic, int) else None


def adaptation_steps(model, steps: int | None = None) -> int | None:
    """How many adaptation iterations ``model.generate`` will run (``steps`` or the model's
    ``adapt_steps``); ``None`` for a model that does not adapt by steps."""
    if steps is not None:
        return steps
    value = getattr(model, "adapt_steps", None)
    return int(value) if isinstance(value, int) else None


class AdaptationStopped(RuntimeError):
    """Raised by :func:`generate_with_progress` when ``should_stop()`` said so; ``done`` of
    ``total`` iterations had run."""

    def __init__(self, done: int, total: int | None):
        super().__init__(f"stopped after {done} of {total} adaptation steps")
        self.done, self.total = done, total


def generate_with_progress(model, support: torch.Tensor, n: int, *, seed: int = 0, steps: int | None = None,
                           on_progress: Progress | None = None,
                           should_stop: Callable[[], bool] | None = None) -> torch.Tensor:  # fmt: skip
    """``model.generate(support, n, seed=seed[, steps=steps])``, calling
    ``on_progress(done, total)`` after each adaptation iteration (``total`` may be ``None``)
    and once at the end. The images are exactly what ``model.generate`` gives.

    ``should_stop()`` is asked after each iteration; when it returns true the adaptation is
    abandoned with :class:`AdaptationStopped` (a half-adapted generator draws nothing useful).
    Only optimiser steps taken by the calling thread count: a learner training something else
    in the meantime is neither counted nor stopped.

    ``steps`` is passed on only to a model whose ``generate`` takes it; giving it to one that
    does not is an error (it would be silently ignored otherwise).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    takes_steps = "steps" in inspect.signature(model.generate).parameters
    if steps is not None and not takes_steps:
        raise ValueError(f"{type(model).__name__}.generate takes no adaptation steps; leave steps=None")
    total = adaptation_steps(model, steps) if takes_steps else None
    per = iterations_per_step(model)
    counted = [0]

    owner = threading.get_ident()

    def hook(optimizer, args, kwargs):
        if threading.get_ident() != owner:
            return
        counted[0] += 1
        if per and counted[0] % per == 0:
            if on_progress is not None:
                on_progress(counted[0] // per, total)
            if should_stop is not None and should_stop():
                raise AdaptationStopped(counted[0] // per, total)

    handle = register_optimizer_step_post_hook(hook)
    try:
        with torch.no_grad():
            images = model.generate(support, n, seed=seed, **({"steps": steps} if steps is not None else {}))
    finally:
        handle.remove()
    if on_progress is not None:
        on_progress(total if total is not None else (counted[0] // per if per else 0), total)
    return images.detach().cpu()


def grid_png(images: torch.Tensor, *, nrow: int = 8, scale: int = 3, pad: int = 2) -> bytes:
    """``float [N, 1, H, W]`` in ``[0, 1]`` as one PNG grid (grey padding), each image
    enlarged ``scale`` times with nearest neighbours so the pixels stay visible."""
    if images.dim() != 4 or images.shape[1] != 1 or images.shape[0] == 0:
        raise ValueError(f"images must be [N, 1, H, W] with N >= 1, got {tuple(images.shape)}")
    n, _, h, w = images.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 128, dtype=np.uint8)
    pixels = np.uint8(np.round(images.detach().cpu().clamp(0, 1).numpy()[:, 0] * 255))
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = pixels[i]
    picture = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST)
    from .personal import png_bytes

    return png_bytes(picture)


def before_after_png(upload: PreparedUpload, *, cell: int = 84, pad: int = 4) -> bytes:
    """Each prepared image under its upload as decoded: the top row the uploads (scaled to fit
    ``cell`` pixels), the bottom row what the generator will see (enlarged to ``cell``)."""
    from .personal import png_bytes

    n = len(upload.images)
    if n == 0:
        raise ValueError("nothing prepared to show")
    canvas = Image.new("RGB", (n * (cell + pad) + pad, 2 * (cell + pad) + pad), (128, 128, 128))
    for i, prepared in enumerate(upload.images):
        original = Image.fromarray(prepared.steps["uploaded"])
        ratio = cell / max(original.size)  # shrink photos smoothly, enlarge tiny scans with visible pixels
        original = original.resize((max(1, round(original.width * ratio)), max(1, round(original.height * ratio))),
                                   Image.Resampling.LANCZOS if ratio < 1 else Image.Resampling.NEAREST)  # fmt: skip
        x = pad + i * (cell + pad)
        canvas.paste(original, (x + (cell - original.width) // 2, pad + (cell - original.height) // 2))
        image = np.uint8(np.round(prepared.image[0].numpy() * 255))
        canvas.paste(Image.fromarray(image).resize((cell, cell), Image.Resampling.NEAREST).convert("RGB"), (x, 2 * pad + cell))
    return png_bytes(canvas)


def data_uri(png: bytes) -> str:
    """The PNG itself as a ``data:`` URI: a link that needs no file on any disk."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def download_html(png: bytes, filename: str = "my-generated-drawings.png") -> str:
    """An HTML download link for ``png`` (the browser saves it when clicked; nothing is
    written by the kernel)."""
    name = html.escape(filename, quote=True)
    return (f'<a download="{name}" href="{data_uri(png)}" style="font-weight:bold">Download the samples as PNG '
            f"({len(png) / 1024:.0f} KB)</a>")  # fmt: skip


def messages_html(problems: Sequence[str], notes: Sequence[str] = ()) -> str:
    """Problems (red) and notes (plain) as HTML; every text escaped (file names come from the
    person who uploaded them)."""
    parts = [f'<div style="color:#b00020">&#9888; {html.escape(p)}</div>' for p in problems]
    parts += [f"<div>{html.escape(n)}</div>" for n in notes]
    return "".join(parts)


def bundled_examples() -> dict[str, list[tuple[str, bytes]]]:
    """The examples anyone can try: real handwritten digits from scikit-learn (always), and
    original Omniglot scans of a Sanskrit character when the Omniglot zip is found, both as the
    files an upload would hold."""
    examples = {"scikit-learn digits: five handwritten 3s (8 x 8 scans)": digit_examples(3, 5)}
    scans = omniglot_examples(n=5)
    if scans:
        examples["Omniglot scans: five people's Sanskrit character 05 (105 x 105 PNGs)"] = scans
    return examples


# ---------------------------------------------------------------------------------------
# The widgets
# ---------------------------------------------------------------------------------------
class GeneratorPanel:
    """Upload or pick drawings, see them prepared, adapt ``model``, see and download samples.

    Args:
        model: a few-shot generator (:class:`~mlcourse.metagen.FewShotGenerator`) whose
            ``generate(support, n, seed=...)`` takes ``[K, 1, size, size]`` in ``[0, 1]``.
        examples: name -> ``[(file name, bytes)]``; default :func:`bundled_examples`.
        samples: how many images to draw.
        steps: adaptation iterations (default: the model's ``adapt_steps``).
        limits: what an upload may hold (:class:`~mlcourse.metagen.personal.UploadLimits`).
        background: adapt in a background thread, so that the kernel stays free to receive a
            click on *Stop* (in a browser, a callback that runs in the kernel's own thread
            blocks every other widget event until it returns). ``wait()`` joins it. Off by
            default: headless code and tests get the result when ``click()`` returns.

    Display it with ``display(panel)`` or ``panel.widget``.
    """

    def __init__(self, model, *, examples: Mapping[str, Sequence[tuple[str, bytes]]] | None = None, samples: int = 16,
                 steps: int | None = None, seed: int = 0, limits: UploadLimits = LIMITS, background: bool = False):  # fmt: skip
        import ipywidgets as w

        if not hasattr(model, "generate"):
            raise TypeError(f"model must be a few-shot generator with generate(support, n, seed=...), got {type(model).__name__}")
        if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= 256:
            raise ValueError(f"samples must be an int in 1..256, got {samples!r}")
        self.model, self.samples, self.limits, self.background = model, samples, limits, bool(background)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        shape = getattr(model, "image_shape", (1, 28, 28))
        if shape[0] != 1:
            raise ValueError(f"the panel prepares grey drawings; this model draws {shape[0]}-channel images")
        self.size = int(shape[-1])
        self.examples = dict(bundled_examples() if examples is None else examples)
        self.prepared: PreparedUpload | None = None
        self.generated: torch.Tensor | None = None
        self.png: bytes | None = None
        takes_steps = "steps" in inspect.signature(model.generate).parameters
        default_steps = adaptation_steps(model, steps) if takes_steps else None

        self.upload = w.FileUpload(accept="image/*", multiple=True, description="Upload drawings")
        self.example = w.Dropdown(options=list(self.examples), description="or an example:",
                                  layout=w.Layout(width="520px"), style={"description_width": "initial"})  # fmt: skip
        self.use_example = w.Button(description="Use this example", disabled=not self.examples)
        self.messages = w.HTML(messages_html([], [f"Upload {limits.min_images} to {limits.max_images} drawings of one "
                                                  "character (photos, scans or drawings), or pick an example."]))  # fmt: skip
        self.prepared_view = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.steps = w.BoundedIntText(value=default_steps or 0, min=0, max=5000, description="adaptation steps",
                                      disabled=default_steps is None, style={"description_width": "initial"},
                                      layout=w.Layout(width="220px"))  # fmt: skip
        self.seed = w.IntText(value=seed, description="seed", layout=w.Layout(width="160px"))
        self.generate_button = w.Button(description="Adapt and draw", button_style="primary", disabled=True)
        self.stop_button = w.Button(description="Stop", button_style="warning", disabled=True,
                                    layout=w.Layout(display=None if self.background else "none"))  # fmt: skip
        self.progress = w.IntProgress(value=0, min=0, max=max(1, default_steps or 1), description="adapting",
                                      layout=w.Layout(width="420px"))  # fmt: skip
        self.status = w.Label("")
        self.samples_view = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.download = w.HTML("")

        self.upload.observe(self.on_upload, names="value")
        self.use_example.on_click(self.on_example)
        self.generate_button.on_click(self.on_generate)
        self.stop_button.on_click(self.on_stop)
        self.widget = w.VBox([
            w.HTML(f"<b>Your own drawings &#8594; {type(model).__name__} &#8594; new drawings</b>"),
            w.HBox([self.upload, self.example, self.use_example]),
            self.messages,
            w.HTML("<i>Prepared for the generator (top: as uploaded; bottom: what it sees, "
                   f"{self.size} x {self.size}, bright strokes on black)</i>"),
            self.prepared_view,
            w.HBox([self.steps, self.seed, self.generate_button, self.stop_button]),
            w.HBox([self.progress, self.status]),
            self.samples_view,
            self.download,
        ])  # fmt: skip
        self.widget.add_class("mlcourse-generator-panel")  # for a browser test or a screenshot to find it

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # -- callbacks ------------------------------------------------------------------------
    def load_files(self, files: Any, source: str = "upload") -> PreparedUpload:
        """Prepare ``files`` (what :func:`~mlcourse.metagen.personal.uploaded_files` accepts),
        show them and the messages, and allow generating only when they are usable."""
        upload = prepare_upload(files, size=self.size, limits=self.limits)
        self.prepared = upload
        self.generated, self.png = None, None
        self.samples_view.value, self.download.value, self.status.value = b"", "", ""
        self.progress.value = 0
        notes = ([f"{len(upload.images)} drawing{'s' if len(upload.images) != 1 else ''} from the {source} prepared:"]
                 + describe(upload)) if upload.images else []  # fmt: skip
        self.messages.value = messages_html(upload.problems, notes)
        self.prepared_view.value = before_after_png(upload) if upload.images else b""
        self.generate_button.disabled = not upload.ok
        return upload

    @property
    def running(self) -> bool:
        """True while a background adaptation runs."""
        return self._thread is not None and self._thread.is_alive()

    def on_upload(self, change=None) -> None:
        """The upload widget's value changed: prepare what it holds."""
        if not self.upload.value:
            return
        if self.running:
            self._fail("Still adapting to the previous drawings: press Stop (or wait), then upload again.")
            return
        try:
            self.load_files(self.upload.value, "upload")
        except Exception as error:  # noqa: BLE001 - the panel shows a message, never a traceback
            self._fail(f"The upload could not be prepared ({type(error).__name__}: {error}).")

    def on_example(self, button=None) -> None:
        """Prepare the example chosen in the dropdown."""
        if self.running:
            self._fail("Still adapting to the previous drawings: press Stop (or wait), then pick the example again.")
            return
        try:
            self.load_files(self.examples[self.example.value], f"example {self.example.value!r}")
        except Exception as error:  # noqa: BLE001
            self._fail(f"The example could not be prepared ({type(error).__name__}: {error}).")

    def on_generate(self, button=None) -> None:
        """Adapt the model to the prepared drawings, with the progress bar, then show the
        samples and the download link (in a background thread when ``background``)."""
        if self.prepared is None or not self.prepared.ok:
            self._fail("Nothing to adapt to yet: upload drawings (or pick an example) first.")
            return
        if self.running:
            return
        self.generate_button.disabled = True
        self._stop.clear()
        if self.background:
            self.stop_button.disabled = False
            self._thread = threading.Thread(target=self._adapt_and_draw, name="generator-panel", daemon=True)
            self._thread.start()
        else:
            self._adapt_and_draw()

    def on_stop(self, button=None) -> None:
        """Ask a running adaptation to stop after its current step."""
        self._stop.set()
        self.stop_button.disabled = True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background adaptation to end; False if it still runs after ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _adapt_and_draw(self) -> None:
        steps = self.steps.value if not self.steps.disabled else None
        self.progress.max = max(1, steps or 1)
        self.progress.value, self.progress.bar_style = 0, ""
        start, last = time.perf_counter(), [0.0]

        def report(done: int, total: int | None) -> None:
            now = time.perf_counter()
            if done == total or now - last[0] > 0.1:  # a redraw costs a message to the browser: ten a second
                last[0] = now
                self.progress.value = min(done, self.progress.max)
                self.status.value = f"{done} of {total} steps, {now - start:.1f} s" if total else f"{now - start:.1f} s"

        try:
            support = self.prepared.support().to(getattr(self.model, "device", "cpu"))
            self.status.value = "adapting..."
            images = generate_with_progress(self.model, support, self.samples, seed=int(self.seed.value), steps=steps,
                                            on_progress=report, should_stop=self._stop.is_set)  # fmt: skip
            self.generated = images
            self.png = grid_png(images, nrow=8, scale=3)
            self.samples_view.value = self.png
            self.download.value = download_html(self.png)
            self.progress.value, self.progress.bar_style = self.progress.max, "success"
            self.status.value = (f"{self.samples} new drawings after {steps} adaptation steps in "
                                 f"{time.perf_counter() - start:.1f} s" if steps is not None else
                                 f"{self.samples} new drawings in {time.perf_counter() - start:.1f} s")  # fmt: skip
        except AdaptationStopped as stopped:
            self.progress.bar_style = "warning"
            self.status.value = f"Stopped after {stopped.done} of {stopped.total} steps: nothing drawn."
        except Exception as error:  # noqa: BLE001 - the panel shows a message, never a traceback
            self.progress.bar_style = "danger"
            self._fail(f"Generating failed ({type(error).__name__}: {error}).")
        finally:
            self.stop_button.disabled = True
            self.generate_button.disabled = not (self.prepared is not None and self.prepared.ok)

    def _fail(self, message: str) -> None:
        self.messages.value = messages_html([message]) + self.messages.value
