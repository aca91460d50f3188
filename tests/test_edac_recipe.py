"""The paper's recipe as the defaults (issue 27): widths, LayerNorm without learnable scale and shift,
critic-pretraining MSE averaged over members, update order alpha -> actor -> critic, log alpha in
[-10, 10]."""

import importlib
import json
import os

import conftest
import numpy as np
import pytest
import torch

SCRIPTS = ["td3bc_pretrain", "edac_pretrain", "td3bc_cql_pretrain", "edac_bc_pretrain"]
MODULES = {name: importlib.import_module(name) for name in SCRIPTS}
EDAC_MODULES = [MODULES["edac_pretrain"], MODULES["edac_bc_pretrain"]]
LOW, HIGH = -np.ones(1, np.float32), np.ones(1, np.float32)


def run_main(module, tmp_path, **overrides):  # EDAC: 3 critics
    critics = {"num_critics": 3} if module in EDAC_MODULES else {}
    return conftest.run_main(module, tmp_path, **{**critics, **overrides})


@pytest.mark.parametrize("script", SCRIPTS)
def test_hidden_dims_build_the_networks_they_name(script, minari_root, tmp_path):
    module = MODULES[script]
    run_dir = run_main(
        module,
        tmp_path,
        hidden_dims=(16, 24, 8),
        total_timesteps=20,
        pretrain_steps=10,
        eval_freq=20,
        save_model=True,
    )
    ckpt = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    actor_widths = [
        w.shape[0] for k, w in ckpt["actor"].items() if k.endswith("weight") and w.dim() == 2
    ]
    critic_widths = [
        w.shape[-1]
        for k, w in ckpt["critic"].items()
        if k.startswith("linears") and k.endswith("weight")
    ]
    assert actor_widths[:-1] == [16, 24, 8]  # the last Linear is the output layer
    assert critic_widths == [16, 24, 8, 1]


@pytest.mark.parametrize("script", SCRIPTS)
def test_layernorm_has_no_learnable_scale_or_shift(script):
    """The paper's code: nn.LayerNorm(elementwise_affine=False); the only parameters are the Linear layers'."""
    module = MODULES[script]
    actor = module.Actor(3, 2, (8, 8), True, -np.ones(2, np.float32), np.ones(2, np.float32))
    critic = module.Critic(3, 2, (8, 8), True, num_critics=4)
    out = 4 if script.startswith("edac") else 2
    assert sum(p.numel() for p in actor.parameters()) == (3 * 8 + 8) + (8 * 8 + 8) + (8 * out + out)
    assert sum(p.numel() for p in critic.parameters()) == 4 * ((5 * 8 + 8) + (8 * 8 + 8) + (8 + 1))
    if script.startswith("edac"):
        x = torch.randn(4, 6, 8) * 3 + 1
        assert torch.allclose(
            module.layer_norm(x)[0], torch.nn.functional.layer_norm(x, (8,)), atol=1e-5
        )


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_pretrain_mse_is_the_mean_over_members(module):
    """Members that predict constants c_i: the loss is mean_i mean_b (c_i - R_b)^2 (the paper's code)."""
    critic = module.Critic(2, 1, (4,), False, num_critics=3)
    with torch.no_grad():
        critic.linears[-1].weight.zero_()
        critic.linears[-1].bias.copy_(torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1))
    batch = {
        "obs": torch.randn(2, 2),
        "act": torch.zeros(2, 1),
        "soft_return": torch.tensor([0.0, 2.0]),
    }
    by_hand = (
        ((1 - 0) ** 2 + (1 - 2) ** 2) / 2
        + ((2 - 0) ** 2 + 0) / 2
        + ((4 - 0) ** 2 + (4 - 2) ** 2) / 2
    ) / 3
    loss, info = module.pretrain_critic_loss(critic, None, None, batch, 0.1, 0.0, 0.99, 0.0)
    assert info["losses/critic_mc"].item() == pytest.approx(by_hand)
    assert loss.item() == pytest.approx(by_hand)  # eta 0: the MSE alone


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_update_order_alpha_actor_critic(module, minari_root, tmp_path, monkeypatch):
    """Soft BC: alpha, then the actor; EDAC: alpha -> actor -> critic, as the paper's code."""
    calls = []
    step = module.gradient_step

    def recording_step(optimizer, loss):
        first = optimizer.param_groups[0]["params"][0]
        calls.append({0: "alpha", 2: "actor", 3: "critic"}[first.dim()])
        step(optimizer, loss)

    monkeypatch.setattr(module, "gradient_step", recording_step)
    run_main(
        module,
        tmp_path,
        total_timesteps=4,
        pretrain_steps=2,
        eval_freq=4,
        actor_pretrain_fraction=0.5,
    )
    assert calls == [
        "alpha",
        "actor",
        "critic",
        "alpha",
        "actor",
        "critic",
        "alpha",
        "actor",
        "critic",
    ]


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_log_alpha_is_kept_in_plus_minus_ten(module):
    actor = module.Actor(2, 1, (8,), False, LOW, HIGH)
    log_alpha = torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.SGD([log_alpha], lr=1e6)
    alpha, info = module.temperature_step(actor, torch.randn(8, 2), log_alpha, optimizer)
    assert abs(log_alpha.item()) == 10.0  # one huge step either way: held at the bound
    assert alpha.item() == pytest.approx(np.exp(log_alpha.item()))
    sign = np.sign(log_alpha.item())
    for _ in range(3):  # the step's direction: towards the target entropy -|A| = -1
        module.temperature_step(actor, torch.randn(8, 2), log_alpha, optimizer)
    assert log_alpha.item() == 10.0 * sign


@pytest.mark.parametrize("module", EDAC_MODULES)
def test_temperature_rises_below_the_target_entropy(module):
    """SAC's temperature loss: alpha grows while the policy's entropy is below -|A| (here: a policy
    with a tiny std has entropy far below -1) and shrinks while it is above (std 1: about 0.67)."""
    for log_std, direction in ((-5.0, 1.0), (0.0, -1.0)):
        actor = module.Actor(2, 1, (8,), False, LOW, HIGH)
        with torch.no_grad():
            actor.net[-1].weight.zero_()
            actor.net[-1].bias.copy_(torch.tensor([0.0, log_std]))
        log_alpha = torch.tensor(0.0, requires_grad=True)
        optimizer = torch.optim.SGD([log_alpha], lr=0.1)
        module.temperature_step(actor, torch.randn(64, 2), log_alpha, optimizer)
        assert np.sign(log_alpha.item()) == direction, (log_std, log_alpha.item())


def test_defaults_are_the_papers_edac_on_every_task():
    """No CQL term, no anchor: `edac_pretrain.py` with no flags is Algorithm 2 followed by EDAC."""
    for module in EDAC_MODULES:
        fields = module.Args.__dataclass_fields__
        assert "cql_weight" not in fields and "pretrain_cql_weight" not in fields
    assert MODULES["edac_bc_pretrain"].Args().bc_weight == 1.0


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_run_from_an_older_version_is_refused_with_the_fix(script, minari_root, tmp_path):
    module = MODULES[script]
    run_dir = run_main(
        module,
        tmp_path,
        hidden_dims=(8, 8),
        total_timesteps=20,
        pretrain_steps=10,
        eval_freq=20,
        save_model=True,
    )
    path = os.path.join(run_dir, "config.json")
    config = json.load(open(path))
    del config["hidden_dims"]
    json.dump(config, open(path, "w"))
    with pytest.raises(
        ValueError,
        match=f"its config.json lacks hidden_dims: an older version of {script}.py wrote it",
    ):
        module.main(module.Args(resume=run_dir))
