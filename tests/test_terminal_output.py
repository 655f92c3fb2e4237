"""What a terminal shows: a bar for every transfer (pull, push, build --push), never a total
before it is known, a message after Ctrl-C on a line of its own, and sync's lines whole
whatever width the terminal says (or does not say)."""
from __future__ import annotations

import json
import os
import re
import signal

from registry_tools.words import size

from .helpers import IMAGES
from .support import imagegen, terminal
from .support.buildinputs import make_store, spec_file
from .support.fakeregistry import serve_layout

BAR = re.compile(r"\[[# ]{30}\] (\S+ \S+) / (\S+ \S+) ")


def bars(raw: str) -> list[tuple[str, str]]:
    """Each frame of the progress bar: (done, total) as drawn."""
    return BAR.findall(raw)


def blobs_of(layout) -> int:
    """The bytes of every blob (each once) a layout's index names: configs and layers."""
    blobs: dict[str, int] = {}
    root = json.loads((layout / "index.json").read_text())
    pending = [m["digest"] for m in root["manifests"]]
    while pending:
        doc = json.loads((layout / "blobs" / "sha256" / pending.pop().split(":")[1]).read_bytes())
        pending += [m["digest"] for m in doc.get("manifests", [])]
        blobs.update({b["digest"]: b["size"] for b in ([doc["config"]] if "config" in doc else []) + doc.get("layers", [])})
    return sum(blobs.values())


def test_pull_draws_no_total_before_it_is_known(registry, facts, tmp_path):
    """The config is read before the layers' total is known: no frame says `783 B / 0 B`."""
    src = f"{registry.host}/test/multi@{facts['multi']['index']}"
    term = terminal.start(["pull", src, "--platform", "linux/arm64", "-o", str(tmp_path / "a.tar"),
                           "--cache-dir", str(tmp_path / "cache")])
    code, out = term.finish()
    assert code == 0 and out.startswith("sha256-")
    frames = bars(term.raw)
    assert frames and frames[-1][0] == frames[-1][1], term.raw
    assert {total for _, total in frames} == {frames[-1][1]}, term.raw  # one total, the layers', from the first frame
    assert terminal.screen(term.raw)[-1].startswith("wrote "), term.raw  # the bar is gone


def test_push_draws_the_bytes_sent(target, tmp_path):
    layout = IMAGES / "multi"
    term = terminal.start(["push", str(layout), f"{target.host}/p/multi:v1", "--cache-dir", str(tmp_path / "c1")])
    code, out = term.finish()
    assert code == 0, term.raw
    frames = bars(term.raw)
    assert frames, f"no bar: {term.raw!r}"
    assert frames[-1] == (size(blobs_of(layout)), size(blobs_of(layout))), frames
    assert all(total == size(blobs_of(layout)) for _, total in frames) and ("0 B", "0 B") not in frames
    shown = terminal.screen(term.raw)
    assert shown[-1].startswith(f"pushed {target.host}/p/multi:v1@sha256:") and "[" not in "".join(shown), shown


def test_build_push_draws_the_bytes_sent(target, tmp_path):
    make_store(tmp_path)
    (tmp_path / "app" / "bin").mkdir(parents=True)
    (tmp_path / "app" / "bin" / "tool").write_bytes(os.urandom(300_000))
    spec = spec_file(tmp_path, contents=[], config={"Cmd": ["/bin/app"]})
    term = terminal.start(["build", str(spec), "--push", f"{target.host}/b/app:1", "--cache-dir", str(tmp_path / "c2")])
    code, out = term.finish()
    assert code == 0, term.raw
    frames = bars(term.raw)
    assert frames and frames[-1][0] == frames[-1][1], term.raw
    assert float(frames[-1][1].split()[0]) > 0 and frames[-1][1].endswith("kB")  # the tool's 300 kB went
    assert terminal.screen(term.raw)[-1].startswith(f"pushed {target.host}/b/app:1@sha256:")


def test_ctrl_c_prints_its_message_on_a_line_of_its_own(httpserver, tmp_path):
    lay = imagegen.Layout()
    big, diff = lay.layer({"big": os.urandom(2 << 20)}, "none")
    img = lay.image([(big, diff)])
    serve_layout(httpserver, lay, slow={big.digest}, delay=0.02)  # ~10 s for the layer
    term = terminal.start(["pull", f"{httpserver.host}:{httpserver.port}/x/y@{img.digest}", "-o",
                           str(tmp_path / "out.tar"), "--cache-dir", str(tmp_path / "cache")])
    try:
        term.wait_for(lambda raw: len(bars(raw)) >= 2)  # the bar is on the screen
        term.proc.send_signal(signal.SIGINT)
        code, _ = term.finish(timeout=30)
    finally:
        term.proc.kill()
    shown = terminal.screen(term.raw)
    assert code == 130, term.raw
    assert shown[-1] == "registry-tools: interrupted; the destination was left untouched", shown


def _lock(capsys, registry, tmp_path):
    from .helpers import run

    (tmp_path / "list.txt").write_text(f"{registry.host}/test/multi:v1 linux/amd64\n")
    code, out, err = run(capsys, "prefetch", "--from", str(tmp_path / "list.txt"), "--json", "--cache-dir",
                         str(tmp_path / "c0"), "--format", "oci")
    assert code == 0, err
    (tmp_path / "lock.json").write_text(out)
    return tmp_path / "lock.json"


def test_sync_lines_stay_whole_on_a_terminal_that_does_not_say_its_width(registry, target, facts, tmp_path,
                                                                        capsys):
    """rich used to break each finished image's line at 80 columns, a digest across two lines."""
    lock = _lock(capsys, registry, tmp_path)
    term = terminal.start(["sync", str(lock), f"{target.host}/m", "--cache-dir", str(tmp_path / "c")], columns=0)
    code, out = term.finish()
    assert code == 0, term.raw
    shown = terminal.screen(term.raw)
    mirrored = [line for line in shown if line.startswith("mirrored ")]
    assert len(mirrored) == 1 and len(mirrored[0]) > 80, shown
    assert f"{registry.host}/test/multi@{facts['multi']['index']} -> {target.host}/m/test/multi" in mirrored[0]
    assert mirrored[0].endswith("7 manifests written"), shown
