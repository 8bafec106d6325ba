"""``bayes-animal simulate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import BayesAnimalError
from ..results.io import (
    write_relationship_csv,
)


def _parse_effects(text: str | None) -> tuple[dict[str, int], set[str]]:
    """``pe,maternal,herd_year:200`` → groups {"herd_year": 200} and the pedigree effects
    {"pe", "maternal"}; a group without ``:levels`` is an error naming it."""
    groups: dict[str, int] = {}
    special: set[str] = set()
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, _, levels = item.partition(":")
        if name in ("pe", "maternal"):
            special.add(name)
        elif levels.isdigit() and int(levels) > 0:
            groups[name] = int(levels)
        else:
            raise BayesAnimalError(
                f"--effects {item!r}: a grouping effect needs its number of levels "
                f"({name}:200); pe and maternal need none."
            )
    return groups, special


def _parse_variances(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise BayesAnimalError(
                f"--variances {item!r}: write name=value, e.g. additive=1,residual=2."
            ) from None
    return out


def _simulate_on_a_pedigree(args: argparse.Namespace) -> int:
    """A pedigree (herd-structured or random mating) and records with known truth: ped.csv,
    pheno.csv, one true_<effect>.csv per effect and truth.json."""
    from ..simulate import simulate_herd_pedigree, simulate_pedigree, simulate_records

    groups, special = _parse_effects(args.effects)
    generations = args.generations
    if args.pedigree == "herd":
        pedigree = simulate_herd_pedigree(
            n_animals=args.animals, n_generations=generations, seed=args.seed
        )
    else:
        per = max(1, args.animals // (generations + 1))
        pedigree = simulate_pedigree(
            n_founders=per, n_generations=generations, n_per_generation=per,
            n_sires=max(2, per // 10), seed=args.seed,
        )  # fmt: skip
    variances = {"additive": 1.0, "residual": 2.0}
    variances |= {name: 0.5 for name in [*special, *groups]}
    given = _parse_variances(args.variances)
    unknown = sorted(set(given) - set(variances) - {"additive:maternal"})
    if unknown:
        raise BayesAnimalError(
            f"--variances names {unknown}, which the simulation does not have; it has "
            f"{', '.join(variances)} (and additive:maternal with maternal)."
        )
    variances |= given
    low, _, high = (args.records or "1").partition(",")
    records = (int(low), int(high or low))
    if "pe" in special and records[1] < 2:
        records = (records[0], max(2, records[1]))  # a permanent environment needs repeats
    sim = simulate_records(
        pedigree, variances=variances, records_per_animal=records,
        phenotyped=args.phenotyped, groups=groups, seed=args.seed + 1,
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pedigree[["id", "sire", "dam"]].to_csv(out / "ped.csv", index=False)
    sim.data.to_csv(out / "pheno.csv", index=False, float_format="%.17g")
    written = ["ped.csv", "pheno.csv"]
    for name, values in sim.effects.items():
        if name in variances or name == "additive":
            path = out / f"true_{name}.csv"
            values.rename("value").rename_axis("id").reset_index().to_csv(
                path, index=False, float_format="%.17g"
            )
            written.append(path.name)
    terms = [f"(1 | {g})" for g in groups] + (["ide(animal)"] if "pe" in special else [])
    formula = " + ".join(["y ~ 1 + x", *terms])
    truth = {
        "seed": args.seed, "pedigree": args.pedigree, "animals": len(pedigree),
        "records": len(sim.data), "variances": sim.variances,
        "h2": variances["additive"] / sum(v for k, v in variances.items() if ":" not in k),
        "formula": formula + (" with --maternal dam" if "maternal" in special else ""),
    }  # fmt: skip
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(
        f"wrote {', '.join([*written, 'truth.json'])} to {out}: {len(pedigree)} animals, "
        f"{len(sim.data)} records; fit with --pedigree {out / 'ped.csv'} --formula "
        f"{formula!r}" + (" --maternal dam" if "maternal" in special else "")
    )
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.pedigree:
        return _simulate_on_a_pedigree(args)
    from ..simulate import simulate_reference

    sim = simulate_reference(
        n=args.n,
        n_snps=args.n_snps,
        sigma2_u=args.sigma2_u,
        lam=args.lam,
        seed=args.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim.data.to_csv(out / "pheno.csv", index=False, float_format="%.17g")
    write_relationship_csv(sim.relmat, out / "A.csv")
    sim.truth.u.reset_index().to_csv(out / "true_u.csv", index=False, float_format="%.17g")
    truth = {
        "seed": args.seed,
        "n": args.n,
        "n_snps": args.n_snps,
        "mu": sim.truth.mu,
        "b": sim.truth.b,
        "sigma2_u": sim.truth.sigma2_u,
        "sigma2_e": sim.truth.sigma2_e,
        "h2": sim.truth.h2,
        "mean_diag_A": sim.relmat.mean_diagonal,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
    print(f"wrote pheno.csv, A.csv, true_u.csv and truth.json to {out}")
    return 0
