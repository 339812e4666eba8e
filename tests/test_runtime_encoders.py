"""``--output`` encoders: H.264 when PyAV or OpenCV can write it, else mp4v with a warning.
The choice is tested with fake probes; real encodes run with what is installed (the PyAV
one is skipped without ``av``)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from wysiwyc.errors import UserError
from wysiwyc.runtime import encoders, outputs
from wysiwyc.runtime.encoders import choose_encoder, even_size
from wysiwyc.runtime.outputs import FrameRecord, VideoOutput

cv2 = pytest.importorskip("cv2")


class Probes(dict):
    """Fake probes: name -> works?, recording which were asked."""

    def __init__(self, **works: bool) -> None:
        super().__init__()
        self.asked: list[str] = []
        for name in ("pyav-h264", "opencv-avc1", "opencv-mp4v", "opencv-mjpg"):
            self[name] = self._probe(name, works.get(name.replace("-", "_"), True))

    def _probe(self, name: str, ok: bool):
        def probe() -> bool:
            self.asked.append(name)
            return ok
        return probe


def test_encoder_choice_prefers_h264():
    p = Probes()
    assert choose_encoder(".mp4", p) == ("pyav-h264", None) and p.asked == ["pyav-h264"]  # stops at the first
    p = Probes(pyav_h264=False)
    assert choose_encoder(".MOV", p) == ("opencv-avc1", None) and p.asked == ["pyav-h264", "opencv-avc1"]
    name, warning = choose_encoder(".mkv", Probes(pyav_h264=False, opencv_avc1=False))
    assert name == "opencv-mp4v"
    assert warning.startswith("writing MPEG-4 Part 2 (mp4v): browsers do not play it")
    assert "pip install 'wysiwyc[h264]'" in warning and "\n" not in warning
    assert choose_encoder(".avi", Probes()) == ("opencv-mjpg", None)  # MJPEG is what .avi asks for
    with pytest.raises(UserError, match="no video encoder for .avi"):
        choose_encoder(".avi", Probes(opencv_mjpg=False))


def test_even_size():
    assert even_size(33, 47) == (32, 46) and even_size(384, 384) == (384, 384) and even_size(1, 1) == (2, 2)


def _frames(n: int, h: int, w: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:, : (i * 3) % w + 1] = (255, 32, 0)  # a bar that grows: frames differ
        out.append(img)
    return out


def _record(img: np.ndarray, i: int) -> FrameRecord:
    return FrameRecord(i, "", img, np.zeros(2, np.float32), [], {}, 0.0)


def test_mp4v_fallback_warns_once_and_writes_a_playable_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(encoders.PROBES, "pyav-h264", lambda: False)
    monkeypatch.setitem(encoders.PROBES, "opencv-avc1", lambda: False)
    monkeypatch.setattr(outputs, "_WARNED", set())
    outs = [VideoOutput(tmp_path / f"s{k}.mp4", 10.0, stream=k) for k in range(2)]
    err = capsys.readouterr().err
    assert err.count("warning: --output writing MPEG-4 Part 2 (mp4v)") == 1  # once, not per stream
    assert outs[0].encoder == "opencv-mp4v" and outs[0].codec == "MPEG-4 Part 2"
    for i, img in enumerate(_frames(8, 48, 64)):
        assert outs[0].write(_record(img, i))
    for o in outs:
        o.close(ok=True)
    cap = cv2.VideoCapture(str(tmp_path / "s0.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 64
    cap.release()
    assert not (tmp_path / "s1.mp4").exists()  # no frames: no file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0.mp4"]


@pytest.mark.skipif(importlib.util.find_spec("av") is None,
                    reason="PyAV is not installed (pip install 'wysiwyc[h264]')")
def test_pyav_writes_h264_that_reads_back(tmp_path):
    import av

    if not encoders.pyav_h264_available():
        pytest.skip("this PyAV's FFmpeg has no libx264")
    out = VideoOutput(tmp_path / "o.mp4", 30.0, encoder="pyav-h264")
    frames = _frames(12, 33, 47)  # odd sides: written at the even size below
    for i, img in enumerate(frames):
        out.write(_record(img, i))
    out.close(ok=True)
    with av.open(str(tmp_path / "o.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and (s.height, s.width) == (32, 46)
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    assert len(decoded) == 12
    # lossy, but the picture is the one written: the red bar's width per frame
    for img, dec in zip(frames, decoded):
        assert abs(int((dec[16, :, 0] > 128).sum()) - int((img[16, :46, 0] > 128).sum())) <= 2


def test_unknown_suffix_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unsupported video type '.webm'"):
        VideoOutput(tmp_path / "o.webm", 10.0)
