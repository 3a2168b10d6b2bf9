"""Phase 1: the selection-matrix fusion, the SelectionMatrix strategy, and its reuse on a second space."""

import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.space import RawFormatModelSpace
from PIL import Image

from nni_bixnas.space import BiONetPlusPlus, SkipChoice, SkipSubset
from nni_bixnas.space.gene import searching_labels
from nni_bixnas.strategy.selection_matrix import SelectionMatrix
from nni_bixnas.strategy.supernet.supermodule import SelectionMatrixFusion, to_supernet, unique_weights
from nni_bixnas.strategy.supernet.tau_schedule import TauAnnealing, annealed_tau, tau_callbacks
from nni_bixnas.strategy.units import CANDIDATES_FILE
from nni_bixnas.training import make_evaluator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from second_space import NestedSkipNet  # noqa: E402

BIG = 1e4  # a logit that makes every Gumbel-softmax column exactly one-hot in float32


def forced(n_rows, picks):
    """A matrix whose column j is (numerically) one-hot on row picks[j]."""
    m = torch.zeros(n_rows, len(picks))
    for j, row in enumerate(picks):
        m[row, j] = BIG
    return m


def constant_inputs(values, sizes=None):
    sizes = sizes or [4] * len(values)
    return [torch.full((1, 2, s, s), float(v)) for v, s in zip(values, sizes)]


def fusion(n_inputs=4, max_k=2, candidates=None, variant="code", picks=(0, 0)):
    f = SelectionMatrixFusion(SkipSubset(n_inputs, max_k, candidates=candidates, label="b"), variant=variant)
    with torch.no_grad():
        f.matrix.copy_(forced(len(f.rows), picks))
    return f


# ----- exact forward semantics ------------------------------------------------------------------------
VALUES = [1.0, 10.0, 100.0, 1000.0]


@pytest.mark.parametrize(
    "variant, candidates, picks, expected",
    [
        # authors' code: the sequential input (index 0) is always added, divisor n_unique + 1; the
        # matrix rows are the other inputs (rows 0, 1, 2 = inputs 1, 2, 3)
        ("code", None, (1, 2), (100 + 1000 + 1) / 3),
        ("code", None, (1, 1), (100 + 1) / 2),  # duplicated pick counts once
        ("code", None, (0, 2), (10 + 1000 + 1) / 3),
        ("code", [1, 3], (0, 1), (10 + 1000) / 2),  # no 0 among the candidates: nothing forced
        ("code", [0, 3], (0, 0), (1 + 1000) / 2),  # rows: input 3 only
        # the paper's Eq. 1: the distinct picks averaged, no forced x
        ("paper", None, (2, 3), (100 + 1000) / 2),
        ("paper", None, (1, 1), 10.0),
        ("paper", None, (0, 3), (1 + 1000) / 2),
        ("paper", [1, 3], (1, 1), 1000.0),
    ],
)
def test_forward_is_the_expected_average(variant, candidates, picks, expected):
    f = fusion(variant=variant, candidates=candidates, picks=picks)
    for mode in (f.train, f.eval):  # Gumbel noise in eval too; a forced matrix is unaffected
        mode()
        out = f(constant_inputs(VALUES))
        assert out.shape == (1, 2, 4, 4)
        torch.testing.assert_close(out, torch.full_like(out, expected), rtol=1e-6, atol=0)


def test_forward_resizes_to_the_block_size():
    f = fusion(n_inputs=3, max_k=1, picks=(1,))  # row 1 = input 2
    inputs = constant_inputs([2.0, 5.0, 8.0], sizes=[8, 4, 2])  # constant maps stay constant when resized
    out = f(inputs)
    assert out.shape == (1, 2, 8, 8)
    torch.testing.assert_close(out, torch.full_like(out, (8 + 2) / 2))
    out = f(inputs, size=(4, 4))
    assert out.shape == (1, 2, 4, 4)


@pytest.mark.parametrize(
    "picks, weights, n_unique",
    [([2, 0, 2], [0.5, 1.0, 0.5], 2), ([1, 1, 1], [1 / 3] * 3, 1), ([0, 1, 2], [1.0, 1.0, 1.0], 3), ([4], [1.0], 1)],
)
def test_unique_weights(picks, weights, n_unique):
    w, n = unique_weights(torch.tensor(picks))
    torch.testing.assert_close(w, torch.tensor(weights))
    assert isinstance(n, torch.Tensor) and float(n) == n_unique


@pytest.mark.parametrize("variant", ["code", "paper"])
def test_fusion_forward_never_reads_a_tensor_on_the_host(monkeypatch, variant):
    # On a GPU each such read (torch.unique's size, int(), .item(), bool()) is a host synchronisation.
    torch.manual_seed(0)
    fusion = SelectionMatrixFusion(SkipSubset(5, 3, label="b"), variant=variant)
    inputs = [torch.rand(1, 2, 8 // 2 ** min(i, 2), 8 // 2 ** min(i, 2)) for i in range(5)]
    torch.manual_seed(1)
    expected = fusion(inputs)

    def host_read(*args, **kwargs):
        raise AssertionError("the forward read a tensor value on the host")

    for name in ("__int__", "__float__", "__bool__", "__index__", "item", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    monkeypatch.setattr(torch, "unique", host_read)
    torch.manual_seed(1)
    out = fusion(inputs)
    monkeypatch.undo()
    torch.testing.assert_close(out, expected)


def test_soft_code_variant_mixes_and_reaches_the_matrix():
    torch.manual_seed(0)
    f = SelectionMatrixFusion(SkipSubset(5, label="b"))
    assert f.matrix.shape == (4, 3)  # (N - 1) x (N - 2): x is always fused; xavier-uniform: |m| <= sqrt(6 / 7)
    assert float(f.matrix.detach().abs().max()) <= math.sqrt(6 / 7)
    out = f([torch.randn(2, 3, 4, 4, requires_grad=True) for _ in range(5)])
    out.sum().backward()
    assert f.matrix.grad is not None and float(f.matrix.grad.abs().sum()) > 0


def test_paper_variant_is_straight_through():
    torch.manual_seed(0)
    f = SelectionMatrixFusion(SkipSubset(5, label="b"), variant="paper")
    inputs = [torch.full((1, 1, 2, 2), float(i)) for i in range(5)]
    out = f(inputs)
    # hard columns: the output is exactly the mean of some distinct inputs
    means = [sum(c) / len(c) for k in (1, 2, 3) for c in itertools.combinations(range(5), k)]
    assert min(abs(float(out.detach()[0, 0, 0, 0]) - m) for m in means) < 1e-6
    (out * torch.randn_like(out)).sum().backward()
    assert float(f.matrix.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "variant, candidates, picks, rows, exported",
    [
        ("code", [1, 2, 4], (2, 0, 2), [1, 2, 4], [1, 4]),  # no 0 among the candidates: no forced input
        ("code", None, (3, 0, 3), [1, 2, 3, 4], [0, 1, 4]),  # 0 is always fused, so always exported
        ("code", [0, 2], (0, 0), [2], [0, 2]),  # k = |candidates| = 2 columns
        ("paper", None, (0, 0, 4), [0, 1, 2, 3, 4], [0, 4]),
        ("paper", [1, 2, 4], (0, 0, 0), [1, 2, 4], [1]),
    ],
)
def test_export_is_what_the_forward_fuses(variant, candidates, picks, rows, exported):
    f = fusion(n_inputs=5, max_k=3, candidates=candidates, variant=variant, picks=picks)
    assert f.rows == rows
    assert f.export() == exported
    assert f.chosen == (candidates or [0, 1, 2, 3, 4])
    values = [1.0, 10.0, 100.0, 1000.0, 10000.0]
    out = f(constant_inputs(values))
    expected = torch.full_like(out, sum(values[i] for i in exported) / len(exported))
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0)


def test_probabilities():
    f = fusion(n_inputs=5, max_k=3, candidates=[1, 2, 4], picks=(2, 0, 2))
    probs = f.probabilities()
    assert probs.shape == (5, 3)
    assert torch.equal(probs[[0, 3]], torch.zeros(2, 3))  # not candidates
    torch.testing.assert_close(probs.sum(0), torch.ones(3))
    g = fusion(n_inputs=5, max_k=3, picks=(0, 0, 0))
    assert torch.equal(g.probabilities()[0], torch.zeros(3))  # 'code': the sequential input is no row


def test_to_supernet_replaces_every_skip_choice_and_keeps_the_space():
    space = BiONetPlusPlus(width=4, stem_width=4)
    supernet, fusions = to_supernet(space, tau=0.5, variant="paper")
    assert sorted(fusions) == sorted(searching_labels(3, 4))
    assert not any(isinstance(m, SkipChoice) for m in supernet.modules())
    assert len(space.skip_choices()) == 20  # the original is untouched
    assert all(f.tau == 0.5 and f.variant == "paper" and f.matrix.shape == (5, 3) for f in fusions.values())
    assert supernet(torch.rand(2, 3, 32, 32)).shape == (2, 1, 32, 32)
    matrices = [p for n, p in supernet.named_parameters() if n.endswith("matrix")]
    assert len(matrices) == 20  # so one optimiser over model.parameters() trains them with the weights


# ----- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=0), "epochs must be a positive int"),
        (dict(epochs=1.5), "epochs must be a positive int"),
        (dict(tau=0), "tau"),
        (dict(tau=float("nan")), "tau"),
        (dict(variant="darts"), "unknown variant 'darts'"),
        (dict(training={"optimizer": "sgd"}), "unknown training setting.*optimizer"),
        (dict(training={"seed": "1"}), "training.seed must be an int, got '1'"),
        (dict(training=["data"]), "training must be a dict"),
        (dict(seed="0"), "seed must be an int"),
        (dict(tau_final=0), "tau_final \\(Gumbel-softmax temperature\\) must be a finite number > 0, got 0"),
        (dict(tau_final="0.1"), "tau_final .* got '0.1'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelectionMatrix(**kwargs)


def test_bad_fusion_arguments():
    with pytest.raises(ValueError, match="tau"):
        SelectionMatrixFusion(SkipSubset(4, label="b"), tau=-1)
    with pytest.raises(ValueError, match="unknown variant"):
        SelectionMatrixFusion(SkipSubset(4, label="b"), variant="hard")
    with pytest.raises(ValueError, match="holds no SkipChoice"):
        to_supernet(nn.Conv2d(1, 1, 1))


class LayerChoiceSpace(ModelSpace):
    """A space with a layer choice (``n_ops`` candidates) and, optionally, a skip choice."""

    def __init__(self, *, n_ops=3, skip=False):
        super().__init__()
        self.op = LayerChoice([nn.Conv2d(3, 4, 3, padding=1) for _ in range(n_ops)], label="op")
        self.skip = SkipChoice(3, 2, label="skip") if skip else None
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        y = self.op(x)
        if self.skip is not None:
            y = self.skip([y, 2 * y, -y])
        return self.head(y)


@pytest.mark.parametrize(
    "space, match",
    [
        (LayerChoiceSpace(), "has no skip choices \\(SkipSubset\\); SelectionMatrix searches skip subsets only"),
        (LayerChoiceSpace(skip=True), "cannot search: 'op' \\(Categorical\\)"),
    ],
)
def test_unsupported_spaces_fail_before_any_training(space, match):
    engine = SequentialExecutionEngine()
    with pytest.raises(ValueError, match=match):
        SelectionMatrix(epochs=1)(RawFormatModelSpace.from_model(space, make_evaluator()), engine)
    assert list(engine.list_models()) == []


def test_a_one_candidate_layer_choice_is_fixed(tmp_path):
    strategy = SelectionMatrix(epochs=1, seed=0, out_dir=tmp_path, training={"data": "default:n=4,size=16"})
    model_space = RawFormatModelSpace.from_model(LayerChoiceSpace(n_ops=1, skip=True), make_evaluator())
    strategy(model_space, SequentialExecutionEngine())
    assert strategy.sample["op"] == 0 and strategy.candidates["skip"][0] == 0  # 'code' always fuses input 0
    frozen = next(strategy.list_models()).executable_model()
    assert frozen(torch.rand(1, 3, 16, 16)).shape == (1, 1, 16, 16)


# ----- annealed temperature -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "epoch, epochs, tau, tau_final, expected",
    [
        (0, 5, 1.0, None, 1.0),  # constant: the authors'
        (4, 5, 1.0, None, 1.0),
        (0, 5, 1.0, 0.01, 1.0),  # geometric from tau at the first epoch ...
        (2, 5, 1.0, 0.01, 0.1),
        (4, 5, 1.0, 0.01, 0.01),  # ... to tau_final at the last
        (1, 3, 2.0, 0.5, 1.0),
        (9, 5, 1.0, 0.01, 0.01),  # past the last epoch (a longer resumed run): stays at tau_final
        (0, 1, 1.0, 0.1, 0.1),  # one epoch: the final temperature
    ],
)
def test_annealed_tau(epoch, epochs, tau, tau_final, expected):
    assert annealed_tau(epoch, epochs, tau, tau_final) == pytest.approx(expected, rel=1e-12)


def test_tau_annealing_sets_every_fusion_each_epoch():
    fusions = [fusion(), fusion()]
    callback = TauAnnealing(fusions, epochs=3, tau=1.0, tau_final=0.25)
    logged = []
    module = type("Module", (), {"log": lambda self, name, value, **kw: logged.append((name, value))})()
    seen = []
    for epoch in range(3):
        callback.on_train_epoch_start(type("Trainer", (), {"current_epoch": epoch})(), module)
        seen.append([f.tau for f in fusions])
    assert seen == [[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]]
    assert logged == [("tau", 1.0), ("tau", 0.5), ("tau", 0.25)]
    assert tau_callbacks(fusions, 3, 1.0, None) == []
    with pytest.raises(ValueError, match="tau_final"):
        tau_callbacks(fusions, 3, 1.0, -1.0)


def test_annealed_phase1_trains_other_matrices_and_records_it(planted_data, tmp_path):
    runs = {}
    for name, tau_final in [("constant", None), ("annealed", 0.05)]:
        strategy = SelectionMatrix(epochs=3, seed=0, tau_final=tau_final, training=planted_data,
                                   out_dir=tmp_path / name)
        strategy(RawFormatModelSpace.from_model(PlantedSkipSpace(), make_evaluator()), SequentialExecutionEngine())
        runs[name] = (strategy.probabilities, json.loads((tmp_path / name / CANDIDATES_FILE).read_text()))
    assert runs["constant"][1]["tau_final"] is None and runs["annealed"][1]["tau_final"] == 0.05
    assert runs["constant"][0] != runs["annealed"][0]  # epochs 2 and 3 trained at lower temperatures
    assert "tau_final=0.05" in repr(SelectionMatrix(tau_final=0.05))


# ----- planted skip: the matrix finds the only informative input --------------------------------------
@pytest.fixture(scope="module")
def planted_data(tmp_path_factory):
    """A ``folder:`` data spec whose masks are a pixel-wise threshold of the (grayscale) image."""
    root = tmp_path_factory.mktemp("planted")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rs = np.random.RandomState(0)
    for i in range(16):
        mask = np.kron(rs.rand(8, 8) > 0.5, np.ones((4, 4), dtype=bool))  # 32 x 32, blocks of 4
        image = np.clip(np.where(mask, 0.75, 0.25) + rs.normal(0, 0.05, mask.shape), 0, 1)
        Image.fromarray((image * 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    return {"data": f"folder:{root}", "batch_size": 1, "lr": 0.05}


class PlantedSkipSpace(ModelSpace):
    """One skip choice over ``n_inputs`` streams: stream ``signal`` sees the image, the others are noise."""

    def __init__(self, *, signal=2, n_inputs=4, width=4, noise=1.0):
        super().__init__()
        self.signal, self.n_inputs, self.noise = signal, n_inputs, noise
        self.encode = nn.Conv2d(1, width, 1)
        self.skip = SkipChoice(n_inputs, 2, stage=1, level=0, label="planted")
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        features = self.encode(x)
        streams = [torch.randn_like(features) * self.noise for _ in range(self.n_inputs)]
        streams[self.signal] = features
        return self.head(self.skip(streams))


@pytest.mark.parametrize(
    "variant, signal, candidates",
    [
        ("code", 2, [0, 2]),  # 'code' always fuses the sequential input 0, so it is always exported
        ("paper", 1, [1]),
        ("paper", 0, [0]),  # the signal on the sequential input itself
    ],
)
def test_planted_skip_is_found(variant, signal, candidates, planted_data, tmp_path):
    strategy = SelectionMatrix(epochs=8, seed=0, variant=variant, training=planted_data, out_dir=tmp_path)
    model_space = RawFormatModelSpace.from_model(PlantedSkipSpace(signal=signal), make_evaluator())
    strategy(model_space, SequentialExecutionEngine())
    probs = torch.tensor(strategy.probabilities["planted"])  # 4 inputs x 2 selections
    assert probs.argmax(0).tolist() == [signal, signal]  # every column votes for the signal
    assert float(probs[signal].min()) > 0.8
    assert strategy.candidates == {"planted": candidates}
    assert strategy.result["default"] > 0.8  # and the supernet segments


def test_planted_signal_on_the_sequential_input_code_variant(planted_data, tmp_path):
    """'code' has no row for input 0 (it always fuses it): with the signal there, 0 is exported and the
    matrix's picks are noise streams the forward averages in, which Phase 2 may then drop."""
    strategy = SelectionMatrix(epochs=4, seed=0, variant="code", training=planted_data, out_dir=tmp_path)
    strategy(RawFormatModelSpace.from_model(PlantedSkipSpace(signal=0), make_evaluator()), SequentialExecutionEngine())
    assert strategy.candidates["planted"][0] == 0 and 2 <= len(strategy.candidates["planted"]) <= 3
    assert torch.equal(torch.tensor(strategy.probabilities["planted"])[0], torch.zeros(2))


@pytest.mark.parametrize("variant", ["code", "paper"])
def test_phase1_forward_equals_the_frozen_export(variant):
    """What Phase 1 exports is exactly what its forward computes (with a confident matrix)."""
    torch.manual_seed(0)
    kwargs = dict(width=4, stem_width=4, iterations=2)
    supernet, fusions = to_supernet(BiONetPlusPlus(**kwargs), variant=variant)
    rs = np.random.RandomState(3)
    with torch.no_grad():
        for f in fusions.values():
            f.matrix.copy_(forced(len(f.rows), rs.randint(len(f.rows), size=f.k).tolist()))
    export = {label: f.export() for label, f in fusions.items()}
    if variant == "code":
        assert all(0 in v for v in export.values()) and max(map(len, export.values())) == 4  # N - 1 inputs
    narrowed = BiONetPlusPlus(**kwargs, candidates=export)
    weights = {k: v for k, v in supernet.state_dict().items() if not k.endswith(".matrix")}
    narrowed.load_state_dict(weights)
    frozen = narrowed.freeze(export)
    supernet.eval(), frozen.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(supernet(x), frozen(x), rtol=1e-5, atol=1e-6)


def test_same_seed_same_candidates(planted_data, tmp_path):
    runs = []
    settings = {"a": dict(seed=3), "b": dict(training={**planted_data, "seed": 3}), "c": dict(seed=1)}
    for name, kwargs in settings.items():  # "b": seed=None takes the training seed
        strategy = SelectionMatrix(**{"epochs": 1, "training": planted_data, "out_dir": tmp_path / name, **kwargs})
        strategy(RawFormatModelSpace.from_model(PlantedSkipSpace(), make_evaluator()), SequentialExecutionEngine())
        runs.append((strategy.candidates, strategy.probabilities, strategy.result["default"]))
    assert runs[0] == runs[1]
    assert runs[2][1] != runs[0][1]  # another seed, another matrix


# ----- BiO-Net++ through NNI -----------------------------------------------------------------------------
def test_bionet_pp_through_nni_and_resume_without_retraining(tmp_path):
    evaluator = make_evaluator(data="default:n=8,size=32", batch_size=2)  # the strategy trains on the evaluator's data
    space = BiONetPlusPlus(width=4, stem_width=4)
    engine = SequentialExecutionEngine()
    strategy = SelectionMatrix(epochs=1, seed=0, out_dir=tmp_path)
    strategy(RawFormatModelSpace.from_model(space, evaluator), engine)

    labels = searching_labels(3, 4)
    assert sorted(strategy.candidates) == sorted(labels)
    for label, value in strategy.candidates.items():
        # 'code': the sequential input 0 is always fused, plus the matrix's up to 3 picks
        assert value[0] == 0 and value == sorted(set(value)) and len(value) <= 4 and all(0 <= i < 5 for i in value)
        rows = strategy.probabilities[label]
        assert len(rows) == 5 and all(len(r) == 3 for r in rows) and rows[0] == [0.0, 0.0, 0.0]
    result = strategy.result
    assert result["phase"] == 1 and 0.0 <= result["default"] <= 1.0 and result["best_epoch"] == 1
    # one job, with the per-epoch IoU as intermediate results
    (job,) = engine.list_models()
    assert len(job.metrics.intermediates) == 1

    with Image.open(result["heatmap"]) as image:
        assert Path(result["heatmap"]).parent == tmp_path and image.format == "PNG" and image.size[1] > 100
    saved = json.loads((tmp_path / CANDIDATES_FILE).read_text())
    assert saved["candidates"] == strategy.candidates and saved["variant"] == "code"

    (model,) = strategy.list_models()
    assert model.sample == strategy.candidates and model.metric == result["default"]
    assert model.executable_model().eval()(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert "epochs=1" in repr(strategy) and "variant='code'" in repr(strategy)

    # a resumed strategy restores the result and submits nothing
    state = strategy.state_dict()
    fresh_engine = SequentialExecutionEngine()
    resumed = SelectionMatrix(epochs=1, seed=0, out_dir=tmp_path / "unused")
    resumed.initialize(RawFormatModelSpace.from_model(BiONetPlusPlus(width=4, stem_width=4), evaluator), fresh_engine)
    resumed.load_state_dict(state)
    resumed.run()
    assert list(fresh_engine.list_models()) == []
    assert resumed.candidates == strategy.candidates and resumed.probabilities == strategy.probabilities
    assert not (tmp_path / "unused").exists()
    assert resumed.state_dict()["random_state"][1].tolist() == state["random_state"][1].tolist()


# ----- a second space ------------------------------------------------------------------------------------
def test_second_space_head_tail_protocol():
    torch.manual_seed(0)
    net = NestedSkipNet(width=4, depth=3).eval()
    assert sorted(m.stage for m in net.simplify().values()) == [1, 1, 1, 2, 2, 3]
    x = torch.rand(2, 3, 32, 32)
    sample = {"x_0_1": [1], "x_1_1": [0], "x_2_1": [0], "x_0_2": [2], "x_1_2": [1], "x_0_3": [0, 3]}
    net.set_active(sample)
    full = net(x)
    for stage in range(net.n_stages + 1):
        features = net.forward_head(x, stage)
        before = [t.clone() for t in features.tensors]
        torch.testing.assert_close(net.forward_tail(features), full)
        assert all(torch.equal(a, b) for a, b in zip(before, features.tensors))
    frozen = net.freeze(sample).eval()
    torch.testing.assert_close(frozen(x), full)
    assert not frozen.skip_choices()
    net.set_active(None)
    with pytest.raises(ValueError, match="stage must be in 0..4"):
        net.forward_head(x, 5)
    with pytest.raises(ValueError, match="keyword only"):  # NNI's tracing reports it
        NestedSkipNet(4)


def test_selection_matrix_on_the_second_space(tmp_path):
    evaluator = make_evaluator(data="default:n=8,size=32")
    strategy = SelectionMatrix(epochs=1, seed=0, out_dir=tmp_path)
    strategy(RawFormatModelSpace.from_model(NestedSkipNet(width=4, depth=3), evaluator), SequentialExecutionEngine())
    space = NestedSkipNet(width=4, depth=3)
    choices = space.simplify()
    assert sorted(strategy.candidates) == sorted(choices)
    narrowed = NestedSkipNet(width=4, depth=3, candidates=strategy.candidates)  # what Phase 2 searches
    for label, value in strategy.candidates.items():
        assert value[0] == 0 and set(value) <= set(choices[label].candidates)  # 'code' always fuses input 0
        assert narrowed.simplify()[label].contains({label: value})  # a narrowed choice's max_k is |candidates|
        assert len(strategy.probabilities[label]) == choices[label].n_inputs
    assert all(m.candidates == strategy.candidates[label] for label, m in narrowed.simplify().items())
    assert (tmp_path / "selection_matrices.png").is_file()
    (model,) = strategy.list_models()
    assert model.executable_model().eval()(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.slow
def test_search_second_space_example_runs_both_phases(tmp_path):
    import search_second_space

    # default max_k: a narrowed choice may then hold all its candidates ('code' adds input 0 to the picks)
    result = search_second_space.main(["--epochs", "1", "--out-dir", str(tmp_path)])
    assert sorted(result["phase1"]["candidates"]) == sorted(NestedSkipNet(width=4).simplify())
    assert json.loads((tmp_path / "result.json").read_text())["phase1"] == result["phase1"]
    space = NestedSkipNet(width=4, candidates=result["phase1"]["candidates"])
    assert result["phase2"]["final_samples"] and all(space.contains(s) for s in result["phase2"]["final_samples"])
