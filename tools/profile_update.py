"""Where an update's time goes: torch.profiler over one phase of a script's update step, on random data.

    python tools/profile_update.py --script td3bc_pretrain --phase finetune [--bf16] [--no-compile]
    python tools/profile_update.py --script edac_pretrain --phase critic-pretrain --num-critics 10

It builds the script's own networks and calls its own loss functions, gradient_step and soft_update in
the order of the script's update step (hidden 256x2 for TD3+BC, 256x3 for EDAC, batch 256, 17
observations, 6 actions, LayerNorm on), warms up, then prints updates/s and the profiler's top
operators by self CPU time.
"""

import argparse
import copy
import importlib
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PHASES = {
    "td3bc_pretrain": ("pretrain", "finetune"),
    "edac_pretrain": ("actor-pretrain", "critic-pretrain", "finetune"),
}


def update_fn(module, phase, args, obs_dim=17, act_dim=6, batch_size=256):
    """A closure doing one update of `phase` with the script's functions, on a fixed random batch."""
    low, high = -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32)
    edac = module.__name__.startswith("edac")
    hidden = (256, 256, 256) if edac else (256, 256)
    actor = module.Actor(obs_dim, act_dim, hidden, True, low, high, bf16=args.bf16)
    n = args.num_critics if edac else 2
    critic = module.Critic(obs_dim, act_dim, hidden, True, n, bf16=args.bf16)
    actor_target, critic_target = copy.deepcopy(actor), copy.deepcopy(critic)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4, fused=True)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=3e-4, fused=True)
    batch = {"obs": torch.randn(batch_size, obs_dim), "act": torch.rand(batch_size, act_dim) * 2 - 1}
    batch.update(rew=torch.randn(batch_size), next_obs=torch.randn(batch_size, obs_dim), term=torch.zeros(batch_size))
    batch.update(mc_return=torch.randn(batch_size), soft_return=torch.randn(batch_size))
    compile_fn = torch.compile if args.compile else (lambda fn: fn)
    cql = 1.0 if args.cql else 0.0  # EDAC's opt-in CQL terms
    params, target_params = list(critic.parameters()), list(critic_target.parameters())
    if not edac:
        params, target_params = params + list(actor.parameters()), target_params + list(actor_target.parameters())
        critic_pre, bc = compile_fn(module.pretrain_critic_loss), compile_fn(module.bc_loss)
        critic_fine, actor_fine = compile_fn(module.critic_loss), compile_fn(module.actor_loss)

        def step(i):
            if phase == "pretrain":
                loss = critic_pre(critic, actor_target, critic_target, batch, 0.99, 0.0, 0.0)[0]
                module.gradient_step(critic_opt, loss)
                module.gradient_step(actor_opt, bc(actor, batch["obs"], batch["act"])[0])
                module.soft_update(target_params, params, 0.005)
                return
            module.gradient_step(critic_opt, critic_fine(critic, actor_target, critic_target, batch, 0.99, False)[0])
            if i % 2 == 0:
                critic.requires_grad_(False)
                loss = actor_fine(actor, critic, batch["obs"], batch["act"], 2.5)[0]
                critic.requires_grad_(True)
                module.gradient_step(actor_opt, loss)
                module.soft_update(target_params, params, 0.005)

        return step

    log_alpha = torch.zeros((), requires_grad=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=3e-4, fused=True)
    bc, actor_fine = compile_fn(module.soft_bc_loss), compile_fn(module.actor_loss)
    critic_pre, critic_fine = compile_fn(module.pretrain_critic_loss), compile_fn(module.critic_loss)

    def step(i):
        if phase == "actor-pretrain":
            alpha, _ = module.temperature_step(actor, batch["obs"], log_alpha, alpha_opt, -float(act_dim))
            module.gradient_step(actor_opt, bc(actor, batch["obs"], batch["act"], alpha)[0])
            return
        if phase == "finetune":
            alpha, _ = module.temperature_step(actor, batch["obs"], log_alpha, alpha_opt, -float(act_dim))
            critic.requires_grad_(False)
            loss = actor_fine(actor, critic, batch["obs"], batch["act"], alpha)[0]
            critic.requires_grad_(True)
            module.gradient_step(actor_opt, loss)
            loss = critic_fine(critic, actor, critic_target, batch, alpha, 1.0, 0.99, cql)[0]
        else:
            loss = critic_pre(critic, actor, critic_target, batch, 0.2, 1.0, 0.99, 0.0, cql)[0]
        module.gradient_step(critic_opt, loss)
        module.soft_update(target_params, params, 0.005)

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", choices=sorted(PHASES), required=True)
    parser.add_argument(
        "--phase", required=True, help="td3bc: pretrain, finetune; edac: actor-pretrain, critic-pretrain, finetune"
    )
    parser.add_argument("--num-critics", type=int, default=10)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--cql", action="store_true", help="edac: with the opt-in CQL terms (weight 1)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--steps", type=int, default=0, help="profiled updates (default: td3bc 200, edac 10)")
    parser.add_argument("--top", type=int, default=12, help="operators to print")
    args = parser.parse_args(argv)
    if args.phase not in PHASES[args.script]:
        parser.error(f"--phase for {args.script}: one of {', '.join(PHASES[args.script])}")
    torch.manual_seed(0)
    module = importlib.import_module(args.script)
    step = update_fn(module, args.phase, args)
    steps = args.steps or (10 if args.script.startswith("edac") else 200)
    for i in range(max(3, steps // 5)):  # warm-up, compilation included
        step(i)
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i)
    seconds = time.perf_counter() - start
    print(f"{args.script} {args.phase}, {'bf16' if args.bf16 else 'fp32'}, {'compiled' if args.compile else 'eager'}: "
          f"{steps / seconds:.1f} updates/s under the profiler ({torch.get_num_threads()} threads)")  # fmt: skip
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    main()
