"""config.model reaches the network: the kernel-gradient fields, also absent from old configs."""

import json

import ml_collections

from configs import default, synthetic
from pose2seg_jax.training import state as state_lib

FIELDS = ("backbone_stem_kernel_grad", "seg_stem_kernel_grad", "conv_kernel_grad")


def test_kernel_gradient_fields_reach_the_model():
    for config in (default.get_config(), synthetic.get_config()):
        model = state_lib.create_model(config)
        for field in FIELDS:
            assert getattr(model, field) == config.model[field]
    # The demo's choices differ from the paper's (measured per size, benchmarks/RESULTS.md).
    paper, demo = default.get_config().model, synthetic.get_config().model
    assert [paper[f] for f in FIELDS] != [demo[f] for f in FIELDS]


def test_a_config_saved_before_the_fields_existed_still_builds_the_paper_choices():
    saved = json.loads(default.get_config().to_json())
    for field in FIELDS:
        del saved["model"][field]
    model = state_lib.create_model(ml_collections.ConfigDict(saved))
    assert (model.backbone_stem_kernel_grad, model.seg_stem_kernel_grad) == ("patches", "taps")
    assert model.conv_kernel_grad == "taps"


def test_other_backends_take_xla_gradients_unless_listed(monkeypatch):
    config = default.get_config()
    monkeypatch.setattr(state_lib.jax, "default_backend", lambda: "gpu")
    model = state_lib.create_model(config)
    assert [getattr(model, f) for f in FIELDS] == ["xla"] * 3
    config.model.custom_grad_backends = ("cpu", "gpu")
    model = state_lib.create_model(config)
    assert [getattr(model, f) for f in FIELDS] == [config.model[f] for f in FIELDS]
    # A config saved before the field existed: CPU only, as then measured.
    saved = json.loads(default.get_config().to_json())
    del saved["model"]["custom_grad_backends"]
    model = state_lib.create_model(ml_collections.ConfigDict(saved))
    assert [getattr(model, f) for f in FIELDS] == ["xla"] * 3
