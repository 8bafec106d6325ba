"""The argument parser of every command."""

from __future__ import annotations

import argparse

from .. import __version__
from ..api import ENGINES
from ..spec.family import FAMILIES
from .demo import _cmd_demo
from .fit import _cmd_fit
from .precompile import _cmd_compile
from .rank import _cmd_rank
from .relmat import _cmd_relmat
from .reml import _cmd_reml
from .simulate import _cmd_simulate


def _relationship_arguments(
    command: argparse.ArgumentParser, *, matrix: bool, optional: bool = False
) -> None:
    none = "; none for a model of independent random effects only" if optional else ""
    group = command.add_argument_group(
        "relationship (one of --relmat, --pedigree, --genotypes; or --genotypes with --pedigree "
        f"and --blend{none})"
    )
    if matrix:
        group.add_argument(
            "--relmat",
            help="relationship matrix: CSV (ids as header and first column), .npz (arrays "
            "matrix and ids), .npy (ids in <name>.ids.txt) or .parquet (an id column)",
        )
    group.add_argument("--pedigree", help="pedigree CSV (id, sire, dam; unknown as 0/NA/empty/.)")
    group.add_argument(
        "--pedigree-columns", help="names of the id, sire and dam columns, e.g. id,father,mother"
    )
    group.add_argument(
        "--allow-selfing",
        action="store_true",
        help="accept an individual used as both sire and dam (plants)",
    )
    group.add_argument(
        "--add-missing-parents",
        action="store_true",
        help="add parents without a row as founders even when they are most of the parents "
        "(a pedigree file that lists offspring only)",
    )
    group.add_argument("--genotypes", help="genotype CSV: id column then markers coded 0/1/2")
    group.add_argument(
        "--genotype-coding",
        choices=["012", "01"],
        default="012",
        help="01: presence/absence in inbred lines, read as 0/2 (default 012)",
    )
    group.add_argument("--ridge", type=float, default=0.0, help="add this to G's diagonal")
    group.add_argument(
        "--blend",
        type=float,
        default=0.0,
        help="w in (1-w)G + wA (needs --genotypes and --pedigree)",
    )


INDEX_HELP = (
    "a selection index over the traits of a fit of several traits, trait=weight pairs: "
    '"bwt=1,tarsus=0.25" ranks every animal on the sum of weight × breeding value, per draw'
)


def _many_arguments(command: argparse.ArgumentParser, *, bayesian: bool) -> None:
    group = command.add_argument_group(
        "many traits", "one model per trait column, the formula without a response: '~ 1 + fix'"
    )
    group.add_argument(
        "--traits",
        help="trait columns: a comma-separated list or globs on column names, e.g. 'trait*'",
    )
    group.add_argument("--resume", action="store_true", help="skip traits in OUT/traits.csv")
    group.add_argument(
        "--workers", type=int, default=None, help="local worker processes (default: the cores)"
    )
    group.add_argument(
        "--scheduler", help="address of a Dask scheduler to run the traits on (bayes_animal[dask])"
    )
    if bayesian:
        group.add_argument(
            "--posteriors",
            action="store_true",
            help="also write each trait's summary.json, ebv.csv, posterior.nc",
        )
    else:
        group.add_argument(
            "--blups", action="store_true", help="also write OUT/blups.csv (animals x traits)"
        )
        group.add_argument(
            "--pairs",
            action="store_true",
            help="fit every bivariate model cbind(a, b) of the --traits instead: OUT/pairs.csv "
            "(each pair's genetic and residual correlation and h2, with SEs) and the matrices "
            "rg.csv, re.csv and their SEs rg_se.csv, re_se.csv",
        )
        group.add_argument(
            "--no-progress", dest="progress", action="store_false", help="no progress bar"
        )
        group.add_argument(
            "--quiet",
            action="store_true",
            help="no progress bar and no samplers' messages (the summary is still printed)",
        )


def _model_arguments(command: argparse.ArgumentParser) -> None:
    """The data, its relationship and the model: what ``reml`` and ``fit`` both take."""
    command.add_argument("--data", required=True, help="CSV of records, one row per record")
    command.add_argument(
        "--sep", default=",", help="the separator between the data file's columns (default ,)"
    )
    _relationship_arguments(command, matrix=True, optional=True)
    command.add_argument(
        "--formula",
        required=True,
        help='fixed and random parts, e.g. "bwt ~ 1 + C(sex) + (1 | byear) + ide(animal)"',
    )
    command.add_argument(
        "--animal", default="animal", help="column of animal ids (default: animal)"
    )
    command.add_argument("--maternal", help="dam column of a maternal genetic effect")
    command.add_argument(
        "--maternal-covariance",
        action="store_true",
        help="estimate the direct-maternal genetic covariance (needs --maternal)",
    )
    command.add_argument(
        "--family",
        choices=list(FAMILIES),
        default="gaussian",
        help="the response's family: gaussian (default); binomial (a 0/1 response, or "
        "cbind(successes, failures)); threshold (the binomial probit, MCMCglmm's name); "
        "ordinal (ordered categories: the cumulative probit); poisson (counts). A non-Gaussian "
        "family's variances are on the latent (liability) scale: reml maximises the Laplace "
        "approximation; fit samples the exact posterior (--parameterisation marginal: that "
        "approximation)",
    )
    command.add_argument(
        "--link",
        choices=sorted({link for links in FAMILIES.values() for link in links}),
        help="binomial: probit (default; the residual on the liability scale is 1) or logit",
    )
    command.add_argument(
        "--overdispersion",
        choices=["units", "none"],
        help="poisson: an observation-level effect (units, the default) or none",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayes-animal",
        description="The Bayesian animal model: REML and NUTS for y = Xb + Zu + e.",
    )
    parser.add_argument("--version", action="version", version=f"bayes_animal {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("reml", help="REML (or ML) estimate of the animal model")
    _model_arguments(fit)
    fit.add_argument(
        "--method",
        choices=["reml", "ml"],
        default="reml",
        help="reml (default; the likelihood of the residual contrasts) or ml (full maximum "
        "likelihood, whose variances are biased down by the fixed effects' degrees of "
        "freedom). With --family binomial or poisson, ml is glmer's Laplace estimate and reml "
        "integrates the fixed effects too",
    )
    fit.add_argument(
        "--engine",
        choices=list(ENGINES),
        default="auto",
        help="spectral (one random effect, dense matrix), sparse (any model), canonical "
        "(several traits on one random term, every trait on every record), auto (default)",
    )
    fit.add_argument(
        "--ordering",
        choices=["amd", "metis", "natural"],
        default="amd",
        help="fill-reducing ordering of the sparse engine (metis needs pymetis)",
    )
    fit.add_argument("--out", help="folder for blup.csv, blup_<component>.csv and reml.json")
    fit.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    fit.add_argument(
        "--nearest-pd",
        action="store_true",
        help="replace a non-PSD relationship matrix by its nearest positive-definite matrix",
    )
    fit.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS threads (default: the cores available, at most 8)",
    )
    _many_arguments(fit, bayesian=False)
    fit.set_defaults(handler=_cmd_reml)

    bayes = commands.add_parser("fit", help="Bayesian fit (NUTS) checked against REML")
    _model_arguments(bayes)
    bayes.add_argument("--out", required=True, help="folder for summary.json, ebv.csv, plots")
    bayes.add_argument(
        "--draws",
        type=int,
        default=None,
        help="draws per chain (default 1000; 3000 for the exact model of a binary, ordinal or "
        "count trait; a default run where a quantity's R-hat > 1.01 or ESS < 400 gets as many "
        "chains again, once; a given --draws runs as asked)",
    )
    bayes.add_argument(
        "--tune",
        type=int,
        default=None,
        help="tuning steps (default 300 for the spectral marginal model with nutpie, 500 for "
        "other marginal models, 1000 otherwise)",
    )
    bayes.add_argument("--chains", type=int, default=4, help="chains (default 4)")
    bayes.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed (default: one drawn and printed; the same seed gives the same draws)",
    )
    bayes.add_argument(
        "--sampler",
        choices=["pymc", "nutpie", "numpyro", "independence"],
        default=None,
        help="NUTS implementation (default: the engine's, the fastest measured — nutpie for "
        "one random effect, several traits and the non-centred model, pymc for several "
        "effects and the partial model), or 'independence': Metropolis-Hastings with a t "
        "proposal near the posterior mean, for a marginal model, chosen by default where NUTS's "
        "gradients would take over 10 min",
    )
    bayes.add_argument(
        "--parameterisation",
        choices=["auto", "marginal", "noncentred", "partial", "latent"],
        default="auto",
        help="auto (default: chosen by the problem's structure, the reason printed), marginal "
        "(b and u integrated out), noncentred (u = sigma L z sampled), partial (a dense G "
        "in its eigenbasis, the other effects sampled) or latent (a Poisson trait with "
        "overdispersion: each record's latent value sampled, b and u integrated out)",
    )
    bayes.add_argument(
        "--prior",
        default="default",
        help="default (= half_t: half-Student-t on each SD, scaled from the data), "
        "inverse_gamma (MCMCglmm's V = 1, nu = 0.002 on every component; its density piles "
        "up near 0, so a component whose likelihood reaches 0 makes divergences likely: 201 "
        "of 4 000 draws on gryphonRM's laying date, against 1 with the default), flat (the "
        "posterior mode is REML) or beta_h2 (Beta on h2, one random effect)",
    )
    bayes.add_argument(
        "--target-accept",
        type=float,
        default=None,
        help="NUTS target acceptance (default 0.8 for marginal models, 0.9 otherwise)",
    )
    bayes.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars"
    )
    bayes.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and no sampler messages (notes on the data and failed "
        "diagnostics are still printed)",
    )
    bayes.add_argument("--json", action="store_true", help="print summary.json on stdout")
    bayes.add_argument(
        "--keep-draws",
        choices=["all", "variances", "none"],
        default="all",
        help="what posterior.nc keeps: all (default; b and the breeding values as 4-byte "
        "floats, compressed: about 14 MB per 1 000 animals for 4 x 1 000 draws), variances "
        "(the variances and ratios only: no rank from the file) or none (no posterior.nc); "
        "ebv.csv and ranking.csv are written either way",
    )
    bayes.add_argument(
        "--nearest-pd",
        action="store_true",
        help="replace a non-PSD relationship matrix by its nearest PD matrix",
    )
    bayes.add_argument(
        "--index",
        help=INDEX_HELP + " (ranking.csv; without it a fit of several traits writes "
        "ranking_<trait>.csv for each)",
    )
    _many_arguments(bayes, bayesian=True)
    bayes.set_defaults(handler=_cmd_fit)

    ranker = commands.add_parser("rank", help="rank candidates from a posterior, with uncertainty")
    ranker.add_argument("--posterior", required=True, help="posterior.nc written by fit")
    ranker.add_argument("--candidates", help="CSV of candidate ids, or a boolean column of --data")
    ranker.add_argument("--data", help="records CSV holding the --candidates column")
    ranker.add_argument(
        "--sep", default=",", help="the separator between the data file's columns (default ,)"
    )
    ranker.add_argument("--animal", default="animal", help="id column of --data")
    ranker.add_argument(
        "--effect",
        default="additive",
        help="the effect to rank: additive (default), maternal or any other random effect",
    )
    group = ranker.add_mutually_exclusive_group()
    group.add_argument(
        "--top",
        type=int,
        help="k of P(top k), the size of the selected set (default: 10%% of the candidates, "
        "at least 1; ranking.csv's k column says which)",
    )
    group.add_argument(
        "--top-fraction", type=float, help="k as a fraction of the candidates (default 0.1)"
    )
    ranker.add_argument("--threshold", type=float, help="also P(u > threshold)")
    ranker.add_argument(
        "--index",
        help=INDEX_HELP,
    )
    ranker.add_argument(
        "--out",
        required=True,
        help="folder for ranking.csv, caterpillar.png, p_top.png and rank_uncertainty.png",
    )
    ranker.set_defaults(handler=_cmd_rank)

    rel = commands.add_parser(
        "relmat", help="write A (from a pedigree) or G (from genotypes), or their inverse"
    )
    _relationship_arguments(rel, matrix=True)
    rel.add_argument(
        "--out",
        required=True,
        help="output file: .csv, or binary .npz, .npy (+ .ids.txt), .parquet",
    )
    rel.add_argument("--inverse", action="store_true", help="write the inverse (sparse for A)")
    rel.add_argument(
        "--format",
        choices=["dense", "triplets"],
        default="dense",
        help="dense: ids as header and first column; triplets: row,col,value (lower triangle, "
        "non-zeros, as ASReml .giv / BLUPF90 files, with ids)",
    )
    rel.set_defaults(handler=_cmd_relmat)

    sim = commands.add_parser("simulate", help="write the reference simulation as CSV files")
    sim.add_argument("--out", required=True, help="folder for pheno.csv, A.csv, true_u.csv")
    sim.add_argument("--n", type=int, default=1000, help="animals (default 1000)")
    sim.add_argument("--n-snps", type=int, default=1000, help="SNPs (default 1000)")
    sim.add_argument("--sigma2-u", type=float, default=5.0, help="genetic variance (default 5)")
    sim.add_argument("--lam", type=float, default=3.0, help="sigma2_u / sigma2_e (default 3)")
    sim.add_argument("--seed", type=int, default=1859, help="random seed (default 1859)")
    scale = sim.add_argument_group(
        "a pedigree and records with known truth (instead of the reference simulation)"
    )
    scale.add_argument(
        "--pedigree",
        choices=["herd", "random"],
        help="simulate a pedigree: herd (herds, AI and natural-service sires, as breeding "
        "programmes have them) or random (random mating, few sires); writes ped.csv, "
        "pheno.csv, true_<effect>.csv and truth.json",
    )
    scale.add_argument(
        "--animals", type=int, default=10_000, help="animals in the pedigree (default 10 000)"
    )
    scale.add_argument(
        "--generations", type=int, default=10, help="generations after the founders (default 10)"
    )
    scale.add_argument(
        "--records",
        help="records per phenotyped animal, min,max (default 1; 1,3 with pe unless given)",
    )
    scale.add_argument(
        "--phenotyped",
        type=float,
        default=1.0,
        help="fraction of the non-founders with records (default 1)",
    )
    scale.add_argument(
        "--effects",
        help="random effects besides the additive one: pe (permanent environment), maternal, "
        "and groups as name:levels, e.g. pe,herd_year:200",
    )
    scale.add_argument(
        "--variances",
        help="true variances, e.g. additive=1,pe=0.3,herd_year=0.5,residual=2 (default: "
        "additive 1, residual 2, every other effect 0.5)",
    )
    sim.set_defaults(handler=_cmd_simulate)

    ahead = commands.add_parser(
        "compile",
        help="compile the sparse engine's numeric kernels into numba's cache (about 5 s, once "
        "per install; otherwise the first fit with a pedigree or several random effects does it)",
    )
    ahead.set_defaults(handler=_cmd_compile)

    demo = commands.add_parser("demo", help="the reference simulation and its fit")
    demo.add_argument("--n", type=int, default=1000, help="animals (default 1000)")
    demo.add_argument("--n-snps", type=int, default=1000, help="SNPs (default 1000)")
    demo.add_argument("--seed", type=int, default=1859, help="random seed (default 1859)")
    demo.add_argument("--top", type=int, default=10, help="breeding values to show")
    demo.add_argument("--draws", type=int, default=1000, help="draws per chain (default 1000)")
    demo.add_argument("--tune", type=int, default=None, help="tuning steps (default: the fit's)")
    demo.add_argument("--chains", type=int, default=4, help="chains (default 4)")
    demo.set_defaults(handler=_cmd_demo)
    return parser
