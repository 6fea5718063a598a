"""The generator panel (mlcourse.metagen.panel), headless: uploads arrive as the browser sends
them (the widget's own JSON deserialiser), every bad upload becomes a message in the panel and
never an exception, generation reports its progress and gives exactly model.generate's images,
the download is a data: link, and nothing is written to disk."""

from __future__ import annotations

import base64
import builtins
import html
import io
import os
import re
import tempfile
import threading
import time

import pytest
import torch
from PIL import Image

from mlcourse.metagen import ReptileGAN
from mlcourse.metagen.common import FewShotGenerator
from mlcourse.metagen.panel import (
    GeneratorPanel,
    before_after_png,
    bundled_examples,
    download_html,
    generate_with_progress,
    grid_png,
    messages_html,
)
from mlcourse.metagen.personal import prepare_upload
from test_personal import BAD_FILES, cut_in_half, drawing, encode, good_files

SIZE = 16


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return ReptileGAN(size=SIZE, width=4, z_dim=8, adapt_steps=3).eval()


def browser_sends(panel: GeneratorPanel, files) -> None:
    """What the front end does when files are picked: the widget's state arrives as JSON and
    ipywidgets deserialises it (content as bytes, last_modified in milliseconds)."""
    panel.upload.set_state({"value": [{"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
                                       "last_modified": 1_700_000_000_000} for name, data in files]})  # fmt: skip


def decode_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# -- the plain functions ----------------------------------------------------------------------
@pytest.mark.parametrize("n_critic", [1, 2])
def test_progress_is_reported_per_iteration_and_the_images_are_generates(n_critic):
    torch.manual_seed(0)
    model = ReptileGAN(size=SIZE, width=4, z_dim=8, adapt_steps=3, n_critic=n_critic).eval()
    support = prepare_upload(good_files(3), size=SIZE).support()
    calls = []
    images = generate_with_progress(model, support, 5, seed=7, steps=4, on_progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(images, model.generate(support, 5, seed=7, steps=4))
    assert calls[:4] == [(1, 4), (2, 4), (3, 4), (4, 4)] and calls[-1] == (4, 4)
    calls.clear()
    generate_with_progress(model, support, 2, seed=0, on_progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (3, 3), "without steps, the model's adapt_steps"


class Copier(FewShotGenerator):
    """A generator that adapts by no steps (repeats its support set): the panel must still work."""

    image_shape = (1, SIZE, SIZE)

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def generate(self, support, n, *, seed=0):
        return support[torch.arange(n) % len(support)]


def test_a_model_without_steps_generates_and_refuses_steps():
    support = prepare_upload(good_files(2), size=SIZE).support()
    calls = []
    images = generate_with_progress(Copier(), support, 3, on_progress=lambda d, t: calls.append((d, t)))
    assert images.shape == (3, 1, SIZE, SIZE) and calls == [(0, None)]
    with pytest.raises(ValueError, match="takes no adaptation steps"):
        generate_with_progress(Copier(), support, 3, steps=5)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        generate_with_progress(Copier(), support, 0)


def test_the_pictures_are_pngs_of_the_right_size():
    images = torch.rand(10, 1, 8, 8)
    grid = decode_png(grid_png(images, nrow=4, scale=2, pad=1))
    assert grid.size == ((4 * 9 + 1) * 2, (3 * 9 + 1) * 2)
    upload = prepare_upload(good_files(3), size=SIZE)
    assert decode_png(before_after_png(upload, cell=40, pad=2)).size == (3 * 42 + 2, 2 * 42 + 2)
    with pytest.raises(ValueError, match="N >= 1"):
        grid_png(torch.rand(0, 1, 8, 8))


def test_the_download_link_holds_the_png_itself():
    png = grid_png(torch.rand(4, 1, 8, 8))
    link = download_html(png, 'my "drawings".png')
    payload = re.search(r'href="data:image/png;base64,([^"]+)"', link).group(1)
    assert base64.b64decode(payload) == png
    assert 'download="my &quot;drawings&quot;.png"' in link


def test_messages_escape_what_the_person_typed():
    text = messages_html(["<script>alert(1)</script>.png is not an image"], ["a & b"])
    assert "<script>" not in text and "&lt;script&gt;" in text and "a &amp; b" in text


def test_the_digits_example_is_always_there():
    examples = bundled_examples()
    digits = next(files for name, files in examples.items() if "digits" in name)
    assert len(digits) == 5 and prepare_upload(digits).ok


# -- the panel, headless ----------------------------------------------------------------------
def test_an_upload_is_prepared_and_shown_before_anything_trains(tiny, monkeypatch):
    trained = []
    monkeypatch.setattr(tiny, "generate", lambda *a, **k: trained.append(1))
    panel = GeneratorPanel(tiny, samples=4)
    browser_sends(panel, good_files(4))
    assert panel.prepared is not None and panel.prepared.ok and len(panel.prepared.images) == 4
    assert decode_png(panel.prepared_view.value).size[0] > 0
    assert "4 drawings from the upload prepared" in panel.messages.value
    assert not panel.generate_button.disabled and not trained


def test_generate_shows_samples_progress_and_a_download(tiny):
    panel = GeneratorPanel(tiny, samples=6, seed=3)
    browser_sends(panel, good_files(3))
    panel.steps.value = 2
    panel.generate_button.click()  # the same path as a click in the browser
    assert panel.generated.shape == (6, 1, SIZE, SIZE)
    assert torch.equal(panel.generated, tiny.generate(panel.prepared.support(), 6, seed=3, steps=2))
    assert panel.progress.value == panel.progress.max == 2 and panel.progress.bar_style == "success"
    assert "6 new drawings after 2 adaptation steps" in panel.status.value
    assert decode_png(panel.samples_view.value).size == decode_png(panel.png).size
    assert base64.b64encode(panel.png).decode() in panel.download.value
    assert not panel.generate_button.disabled


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_each_bad_upload_becomes_a_message_in_the_panel(tiny, kind):
    name, data, message = BAD_FILES[kind]
    panel = GeneratorPanel(tiny)
    browser_sends(panel, good_files(1) + [(name, data)])
    assert re.search(re.escape(name) + ".*" + message, panel.messages.value), panel.messages.value
    assert "Only 1 of the 2 files could be used" in panel.messages.value
    assert panel.generate_button.disabled and "Traceback" not in panel.messages.value


@pytest.mark.parametrize("count, message", [(1, "Only 1 image was uploaded"), (13, "13 images were uploaded, more than the 12")])
def test_too_few_or_too_many_images_in_the_panel(tiny, count, message):
    panel = GeneratorPanel(tiny)
    browser_sends(panel, good_files(count))
    assert message in panel.messages.value and panel.generate_button.disabled


def test_generating_before_an_upload_or_when_the_model_fails_is_a_message(tiny):
    panel = GeneratorPanel(tiny)
    panel.on_generate()
    assert "Nothing to adapt to yet" in panel.messages.value

    class Broken(Copier):
        def generate(self, support, n, *, seed=0):
            raise RuntimeError("out of memory")

    broken = GeneratorPanel(Broken())
    browser_sends(broken, good_files(2))
    broken.on_generate()
    assert "Generating failed (RuntimeError: out of memory)" in broken.messages.value
    assert broken.progress.bar_style == "danger" and broken.generated is None


def test_an_example_is_prepared_like_an_upload(tiny):
    panel = GeneratorPanel(tiny, examples={"three drawings": good_files(3)})
    panel.use_example.click()
    assert panel.prepared.ok and "from the example 'three drawings'" in html.unescape(panel.messages.value)


def test_argument_errors(tiny):
    with pytest.raises(TypeError, match="few-shot generator"):
        GeneratorPanel(object())
    with pytest.raises(ValueError, match="samples must be an int in 1..256"):
        GeneratorPanel(tiny, samples=0)


def test_the_panel_writes_nothing_to_disk(tiny, tmp_path, monkeypatch):
    """A whole session (bad uploads, a good one, an example, generating, the download link)
    with the working directory and the temporary folder in empty folders: no file is opened
    for writing anywhere (builtins.open and os.open watched), and neither folder gains a file."""
    monkeypatch.chdir(tmp_path)
    writes = []
    real_open, real_os_open = builtins.open, os.open

    def watched_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            writes.append((file, mode))
        return real_open(file, mode, *args, **kwargs)

    def watched_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            writes.append((path, flags))
        return real_os_open(path, flags, *args, **kwargs)

    temp = tmp_path.parent / f"{tmp_path.name}-tmp"  # a temporary folder of its own: other jobs' files cannot appear
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    panel = GeneratorPanel(tiny, samples=4, examples={"mine": good_files(2)})
    monkeypatch.setattr(builtins, "open", watched_open)
    monkeypatch.setattr(os, "open", watched_os_open)
    browser_sends(panel, [(name, data) for name, data, _ in BAD_FILES.values()])
    browser_sends(panel, good_files(2) + [("cut.png", cut_in_half(encode(drawing(9, side=300))))])
    panel.use_example.click()
    browser_sends(panel, good_files(4))
    panel.steps.value = 1
    panel.generate_button.click()
    monkeypatch.undo()
    assert panel.png is not None and panel.download.value
    assert writes == []
    assert list(tmp_path.iterdir()) == []
    # PyTorch makes an empty cache folder (torchinductor_<user>) in the temporary folder when the
    # first optimiser is created; it must stay empty, and nothing else may appear.
    left = [p for p in temp.rglob("*") if not (p.is_dir() and p.relative_to(temp).parts[0].startswith("torchinductor_"))]
    assert left == []


# -- stopping, and a background run -------------------------------------------------------------
def test_should_stop_abandons_the_adaptation_and_leaves_the_model_alone(tiny):
    from mlcourse.metagen.panel import AdaptationStopped

    support = prepare_upload(good_files(2), size=SIZE).support()
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    seen = []
    with pytest.raises(AdaptationStopped, match="stopped after 3 of 50") as stopped:
        generate_with_progress(tiny, support, 4, steps=50, on_progress=lambda d, t: seen.append(d),
                               should_stop=lambda: len(seen) >= 3)  # fmt: skip
    assert stopped.value.done == 3 and seen == [1, 2, 3]
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())


def test_only_the_calling_threads_optimiser_steps_count(tiny):
    """A learner training something else while the panel adapts in its thread is not counted."""
    support = prepare_upload(good_files(2), size=SIZE).support()
    calls, done = [], threading.Event()

    def adapt():
        try:
            generate_with_progress(tiny, support, 2, steps=5, on_progress=lambda d, t: calls.append((d, t)))
        finally:
            done.set()

    worker = threading.Thread(target=adapt)
    weight = torch.nn.Parameter(torch.zeros(3))
    other = torch.optim.SGD([weight], lr=0.1)
    worker.start()
    steps_elsewhere = 0
    while not done.is_set() or steps_elsewhere < 5:
        weight.grad = torch.ones(3)
        other.step()
        steps_elsewhere += 1
    worker.join()
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5), (5, 5)] and steps_elsewhere >= 5


def test_the_stop_button_stops_a_background_run(tiny):
    panel = GeneratorPanel(tiny, samples=4, background=True)
    browser_sends(panel, good_files(2))
    panel.steps.value = 5000
    panel.generate_button.click()
    assert panel.running and not panel.stop_button.disabled and panel.generate_button.disabled
    browser_sends(panel, good_files(3))  # an upload while it runs is refused with a message
    assert "Still adapting" in panel.messages.value and len(panel.prepared.images) == 2
    deadline = time.monotonic() + 60
    while panel.progress.value < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    panel.stop_button.click()
    assert panel.wait(60)
    assert panel.status.value.startswith("Stopped after") and panel.progress.bar_style == "warning"
    assert panel.generated is None and not panel.generate_button.disabled and panel.stop_button.disabled


def test_a_background_run_gives_what_a_synchronous_one_gives(tiny):
    results = []
    for background in (False, True):
        panel = GeneratorPanel(tiny, samples=3, seed=5, background=background)
        browser_sends(panel, good_files(2))
        panel.steps.value = 2
        panel.generate_button.click()
        assert panel.wait(60)
        results.append(panel.generated)
    assert torch.equal(results[0], results[1])
