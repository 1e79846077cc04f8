"""Pictures: the arrays they are drawn from agree with the nets' analytic receptive fields, the
files get written, the CLI draws them on request and says what to install when it cannot."""

import sys

import numpy as np
import pytest

from properties import audit_model, cli
from properties.errors import AuditError
from properties.extra.architectures import Architecture
from properties.output import pictures
from properties.output.pictures import FUTURE, GAP, LEAK, PAST, PRESENT, SEEN

pytest.importorskip("matplotlib")

FAST = {"checks": ("causality", "receptive_field", "blind_spot"), "max_examples": 3}
# Dilations 2 and 4 after the shift: offsets -1, -3, -5, -7, holes at -2, -4, -6.
DILATED = Architecture(1, (2, 2), (2, 4))
MASKED = Architecture(2, (3, 3), (1, 1), style="masked")


def _audit(arch: Architecture, grid=None, **options):
    return audit_model(
        arch.build(), grid=grid or arch.grid, layout=arch.layout, predicts="current", **options
    )


@pytest.fixture(scope="module")
def dilated():
    return _audit(DILATED, grid=(24,), **FAST)


@pytest.fixture(scope="module")
def masked():
    return _audit(MASKED, grid=(9, 9), **FAST)


@pytest.fixture(scope="module")
def leaky():
    return _audit(Architecture(1, (2, 2), (1, 2), bug="same_padding"), grid=(12,), **FAST)


def test_the_strip_shows_every_seen_input_and_every_hole(dilated):
    t = dilated.receptive_field.position
    codes = pictures.categories(dilated, t)
    offsets = sorted(o[0] for o in DILATED.offsets())
    assert np.flatnonzero(codes == SEEN).tolist() == [t + o for o in offsets]
    assert np.flatnonzero(codes == GAP).tolist() == [t + o for o in (-6, -4, -2)]
    assert codes[t] == PRESENT and (codes[t + 1 :] == FUTURE).all()
    assert (codes[: t - 7] == PAST).all()
    assert pictures.row_facts(dilated, t) == {"size": 4, "span": 7, "gaps": 3}


def test_the_image_shows_the_masked_pixelcnn_blind_spot(masked):
    bs = masked.blind_spot
    assert bs.size == MASKED.blind_spot() > 0
    codes = pictures.categories(masked, bs.position)
    np.testing.assert_array_equal(codes == GAP, bs.pixels.numpy())
    r, c = masked.subject.position(bs.position)
    seen = {(int(i) - r, int(j) - c) for i, j in zip(*np.nonzero(codes == SEEN), strict=True)}
    assert seen <= MASKED.offsets()
    assert codes[r, c] == PRESENT and (codes[r + 1 :] == FUTURE).all()
    roles = [role for role, _ in pictures.image_outputs(masked)]
    assert roles[-1] in ("blind spot", "receptive field and blind spot")


def test_the_matrix_marks_forbidden_cells_and_violations(leaky):
    matrix = pictures.dependency_matrix(leaky)
    assert matrix.present_forbidden  # predicts current: the diagonal is forbidden too
    np.testing.assert_array_equal(matrix.forbidden, matrix.future | matrix.present)
    rows, inputs = np.nonzero(matrix.seen & matrix.forbidden)
    gradient = matrix.violations["gradient"]
    assert sorted(zip(rows, inputs, strict=True)) == sorted(zip(*gradient, strict=True))
    assert "perturbation" in matrix.violations
    codes = pictures.categories(leaky, leaky.receptive_field.position)
    assert (codes == LEAK).any()


def test_pictures_are_written_for_sequences_and_images(dilated, masked, tmp_path):
    written = pictures.draw(dilated, tmp_path / "a", target="zoo:dilated")
    written += pictures.draw(masked, tmp_path / "a", target="nets/masked.py:net")
    assert [p.name for p in written] == [
        "dilated-dependencies.png",
        "masked_net-receptive-field.png",
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_file_stems_come_from_the_target():
    assert pictures.file_stem("zoo:pixelcnn_masked") == "pixelcnn_masked"
    assert pictures.file_stem("path/to/leaky.py:Model") == "leaky_Model"
    assert pictures.file_stem("pkg.models:make") == "pkg.models_make"


MODEL_FILE = """
from properties.extra.architectures import Architecture
model = Architecture(1, (2, 2), (2, 4)).build()
"""


def test_the_cli_draws_on_request(tmp_path, capsys):
    (tmp_path / "nets.py").write_text(MODEL_FILE)
    out_dir = tmp_path / "pictures"
    argv = ["audit", f"{tmp_path / 'nets.py'}:model", "--length", "16", "--layout", "BCT"]
    argv += ["--max-examples", "2", "--checks", "causality,receptive_field"]
    assert cli.main(argv + ["--pictures", str(out_dir), "--predicts", "current"]) == 0
    path = out_dir / "nets_model-dependencies.png"
    assert path.is_file()
    assert f"pictures: {path}" in capsys.readouterr().out


def test_missing_matplotlib_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    needs = r"pictures need matplotlib: pip install autoregressive-audit"
    with pytest.raises(AuditError, match=needs):
        pictures.require_matplotlib()
    argv = ["audit", "zoo:nettoy1d", "--pictures", str(tmp_path)]
    assert cli.main(argv) == 2  # before the audit: no minutes lost
    err = capsys.readouterr().err.strip()
    assert err == (
        "python -m properties: error: pictures need matplotlib: "
        "pip install autoregressive-audit[plots]"
    )


def test_the_certificate_is_drawn_beside_the_measured_map(tmp_path):
    arch = Architecture(1, (2, 2), (1, 2), seed=1)
    result = audit_model(arch.build(), grid=arch.grid, layout=arch.layout, max_examples=3,
                         checks=("receptive_field", "certificate"))
    paths = pictures.draw(result, tmp_path, target="net")
    assert [p.name for p in paths] == ["net-dependencies.png", "net-certificate.png"]
    bound = result.certificate.bound.numpy()
    image = pictures._rgb_bound(bound, bound, np.ones(len(bound), dtype=bool))
    assert not (image == (0.85, 0.1, 0.1)).all(-1).any()  # nothing measured outside the proof
    alone = audit_model(arch.build(), grid=arch.grid, layout=arch.layout,
                        checks=("certificate",))
    assert [p.name for p in pictures.draw(alone, tmp_path, target="p")] == ["p-certificate.png"]
