"""RDP vs the tighter accountant at fedrec's DP settings, each checked against Google's dp-accounting.

Prints one row per setting: the mechanism (noise multiplier, sampling rate, steps), the
epsilon of fedrec's ledger with Opacus's RDP and PRV accountants, dp-accounting's RDP and
PLD on the same composed Poisson-subsampled Gaussian, and how much smaller PRV's epsilon
is than RDP's. Needs the test extra (``pip install -e ".[test]"``: dp-accounting)::

    python simulations/accountants.py

Settings: ``fedrec simulate privacy=dp`` (sigma 1) and ``privacy=target_eps
privacy.target_epsilon=8`` (sigma calibrated with RDP) at the defaults (64 users per step,
5 rounds x 0.2 local epochs) on each platform's user count, and the FINDINGS.md reference
point (q = 0.032, sigma = 1, 312 steps).
"""

from __future__ import annotations

import warnings

import dp_accounting
from dp_accounting import pld, rdp

from fedrec.privacy import PrivacyLedger, dp_steps, plan_private

DELTA = 1e-5
USERS = {"ecommerce": 4905, "video": 943, "social": 1883}  # PROTOCOL.md
BATCH, ROUNDS, LOCAL_EPOCHS = 64, 5, 0.2


def reference(sigma: float, q: float, steps: int, kind: str) -> float:
    """dp-accounting's epsilon of ``steps`` Poisson-subsampled Gaussian steps (``kind``: rdp or pld)."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    acc = rdp.RdpAccountant() if kind == "rdp" else pld.PLDAccountant()
    return float(acc.compose(event).get_epsilon(DELTA))


def ledger_epsilon(sigma: float, q: float, steps_per_round: int, rounds: int, accountant: str) -> float:
    """The epsilon of a ledger charged round by round."""
    ledger = PrivacyLedger(delta=DELTA, accountant=accountant)
    for r in range(rounds):
        ledger.charge(sigma, q, steps_per_round, round_id=r + 1)
    return ledger.epsilon()


def settings() -> list[tuple[str, float, float, int, int]]:
    """``(label, sigma, q, steps per round, rounds)`` of every row."""
    rows = []
    for target in (None, 8.0):
        for name, n in USERS.items():
            q = BATCH / n
            per_round = dp_steps(LOCAL_EPOCHS, q)
            plan = plan_private(n, BATCH, per_round, ROUNDS, noise_multiplier=1.0, target_epsilon=target)
            label = f"{name} {'privacy=dp' if target is None else 'target_eps=8'}"
            rows.append((label, plan.noise_multiplier, plan.sample_rate, per_round, ROUNDS))
    rows.append(("reference q=0.032 sigma=1", 1.0, 0.032, 312, 1))
    return rows


def main() -> None:
    """Print the table."""
    warnings.filterwarnings("ignore")
    head = "| setting | sigma | q | steps | RDP (ledger) | dp-acc RDP | PRV (ledger) | dp-acc PLD | PRV vs RDP |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for label, sigma, q, per_round, rounds in settings():
        steps = per_round * rounds
        r, p = (ledger_epsilon(sigma, q, per_round, rounds, a) for a in ("rdp", "prv"))
        dr, dp = reference(sigma, q, steps, "rdp"), reference(sigma, q, steps, "pld")
        print(
            f"| {label} | {sigma:.3f} | {q:.4f} | {steps} | {r:.3f} | {dr:.3f} ({r / dr - 1:+.2%}) | {p:.3f} | "
            f"{dp:.3f} ({p / dp - 1:+.2%}) | {1 - p / r:.1%} tighter |"
        )


if __name__ == "__main__":
    main()
