"""Updates/s of a straightforward implementation vs the scripts' batched modules, same process, same data.

The straightforward side is what a first implementation looks like: one nn.Sequential per critic, a
Python loop over members (for EDAC's diversity term too), a per-parameter Polyak loop, default Adam.

    python tools/speed_reference.py --algo td3bc
    python tools/speed_reference.py --algo edac --num-critics 10
"""

import argparse
import copy
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mlp(i, o, hidden):
    layers = []
    for h in hidden:
        layers += [nn.Linear(i, h), nn.LayerNorm(h), nn.ReLU()]
        i = h
    return nn.Sequential(*layers, nn.Linear(i, o))


def straightforward_edac_critic_step(critics, targets, optimizer, batch, actor, gamma=0.99, tau=0.005, eta=1.0, alpha=0.1):
    obs, act, rew, next_obs, term = batch
    with torch.no_grad():
        next_act, next_log_prob = actor(next_obs)
        x = torch.cat([next_obs, next_act], 1)
        q_next = torch.stack([t(x).squeeze(1) for t in targets]).min(0).values - alpha * next_log_prob
        y = rew + gamma * (1 - term) * q_next
    loss, grads = 0.0, []
    for c in critics:
        a = act.clone().requires_grad_(True)
        q = c(torch.cat([obs, a], 1)).squeeze(1)
        loss = loss + F.mse_loss(q, y)
        g = torch.autograd.grad(q.sum(), a, create_graph=True)[0]
        grads.append(g / (g.norm(dim=1, keepdim=True) + 1e-10))
    n = len(critics)
    diversity = sum((grads[i] * grads[j]).sum(1) for i in range(n) for j in range(n) if i != j).mean() / (n - 1)
    optimizer.zero_grad()
    (loss + eta * diversity).backward()
    optimizer.step()
    with torch.no_grad():
        for c, t in zip(critics, targets):
            for p, tp in zip(c.parameters(), t.parameters()):
                tp.data.copy_(tau * p.data + (1 - tau) * tp.data)


def straightforward_td3bc_step(i, actor, actor_t, c1, c2, c1t, c2t, actor_opt, critic_opt, batch, tau=0.005):
    obs, act, rew, next_obs, term = batch
    with torch.no_grad():
        noise = (torch.randn_like(act) * 0.2).clamp(-0.5, 0.5)
        na = (torch.tanh(actor_t(next_obs)) + noise).clamp(-1, 1)
        x = torch.cat([next_obs, na], 1)
        y = rew + 0.99 * (1 - term) * torch.min(c1t(x), c2t(x)).squeeze(1)
    x = torch.cat([obs, act], 1)
    loss = F.mse_loss(c1(x).squeeze(1), y) + F.mse_loss(c2(x).squeeze(1), y)
    critic_opt.zero_grad()
    loss.backward()
    critic_opt.step()
    if i % 2 == 0:
        pi = torch.tanh(actor(obs))
        q = c1(torch.cat([obs, pi], 1))
        actor_loss = -(2.5 / q.abs().mean().detach()) * q.mean() + F.mse_loss(pi, act)
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        with torch.no_grad():
            for net, tgt in ((actor, actor_t), (c1, c1t), (c2, c2t)):
                for p, tp in zip(net.parameters(), tgt.parameters()):
                    tp.data.copy_(tau * p.data + (1 - tau) * tp.data)


def timed(fn, steps, warmup=3):
    for i in range(warmup):
        fn(i)
    t = time.perf_counter()
    for i in range(steps):
        fn(i)
    return steps / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=["td3bc", "edac"], required=True)
    parser.add_argument("--num-critics", type=int, default=10, help="EDAC ensemble size")
    parser.add_argument("--steps", type=int, default=0, help="timed updates per variant (default: td3bc 500, edac 20)")
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    b, od, ad = 256, args.obs_dim, args.act_dim
    batch = (torch.randn(b, od), torch.rand(b, ad) * 2 - 1, torch.randn(b), torch.randn(b, od), torch.zeros(b))
    if args.algo == "edac":
        import edac_pretrain as E

        steps = args.steps or 20
        hidden = (256, 256, 256)
        actor = E.Actor(od, ad, hidden, True, -torch.ones(ad).numpy(), torch.ones(ad).numpy())
        critics = [mlp(od + ad, 1, hidden) for _ in range(args.num_critics)]
        targets = copy.deepcopy(critics)
        opt = torch.optim.Adam([p for c in critics for p in c.parameters()], 3e-4)
        ref = timed(lambda i: straightforward_edac_critic_step(critics, targets, opt, batch, actor), steps)
        critic = E.Critic(od, ad, hidden, True, args.num_critics)
        target = copy.deepcopy(critic)
        copt = torch.optim.Adam(critic.parameters(), 3e-4, fused=True)
        params, tparams = list(critic.parameters()), list(target.parameters())
        e_args = E.Args()
        named_batch = dict(zip(("obs", "act", "rew", "next_obs", "term"), batch), soft_return=batch[2])

        def batched(i):
            loss, _ = E.finetune_critic_loss(critic, actor, target, named_batch, torch.tensor(0.1), 1.0, e_args)
            E.gradient_step(copt, loss)
            E.soft_update(tparams, params, 0.005)

        ours = timed(batched, steps)
        what = f"EDAC critic update (TD + diversity + Polyak), N={args.num_critics}, hidden 256x3"
    else:
        steps = args.steps or 500
        hidden = (256, 256)
        actor, c1, c2 = mlp(od, ad, hidden), mlp(od + ad, 1, hidden), mlp(od + ad, 1, hidden)
        actor_t, c1t, c2t = copy.deepcopy(actor), copy.deepcopy(c1), copy.deepcopy(c2)
        aopt, copt = (
            torch.optim.Adam(actor.parameters(), 3e-4),
            torch.optim.Adam(list(c1.parameters()) + list(c2.parameters()), 3e-4),
        )
        ref = timed(lambda i: straightforward_td3bc_step(i, actor, actor_t, c1, c2, c1t, c2t, aopt, copt, batch), steps)
        ours = float("nan")
        what = "TD3+BC update, hidden 256x2 (time the script itself for its own number)"
    print(f"{what}: straightforward {ref:.1f} updates/s" + ("" if ours != ours else f", batched {ours:.1f} updates/s, ratio {ours / ref:.2f}x"))


if __name__ == "__main__":
    main()
