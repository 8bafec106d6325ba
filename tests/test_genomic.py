"""VanRaden's G: the formula, imputation, monomorphic markers, blend, ridge, definiteness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_animal import DataError, RelationshipError, RelationshipMatrix
from bayes_animal.structures.genomic import GenomicNotice, genomic_relationship, read_genotypes


def _genotypes(n=40, m=300, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.1, 0.9, m)
    codes = rng.binomial(2, p, size=(n, m)).astype(float)
    return pd.DataFrame(
        codes,
        index=pd.Index([f"g{i}" for i in range(n)], name="id"),
        columns=[f"m{j}" for j in range(m)],
    )


def test_vanraden_formula_with_estimated_frequencies():
    geno = _genotypes()
    # frequencies from the same animals centre every column: 1ᵀG = 0, G is singular
    result = genomic_relationship(geno, check_definite=False)
    np.testing.assert_allclose(result.relmat.matrix.sum(axis=0), 0, atol=1e-10)
    M = geno.to_numpy()
    p = M.mean(axis=0) / 2
    Zc = M - 2 * p
    expected = Zc @ Zc.T / (2 * np.sum(p * (1 - p)))
    np.testing.assert_allclose(result.relmat.matrix, expected, atol=1e-12)
    assert result.n_markers == 300 and result.n_imputed == 0
    assert list(result.relmat.ids) == list(geno.index)


def test_given_frequencies_are_used_by_name_or_order():
    geno = _genotypes(m=50)
    p = pd.Series(np.linspace(0.2, 0.8, 50), index=geno.columns)
    by_name = genomic_relationship(geno, allele_frequencies=p.iloc[::-1], check_definite=False)
    by_order = genomic_relationship(geno, allele_frequencies=p.to_numpy(), check_definite=False)
    Zc = geno.to_numpy() - 2 * p.to_numpy()
    expected = Zc @ Zc.T / (2 * np.sum(p * (1 - p)))
    np.testing.assert_allclose(by_name.relmat.matrix, expected, atol=1e-12)
    np.testing.assert_allclose(by_order.relmat.matrix, expected, atol=1e-12)
    with pytest.raises(DataError, match="No allele frequency for marker"):
        genomic_relationship(geno, allele_frequencies=p.iloc[1:])
    with pytest.raises(DataError, match="3 allele frequencies for 50 markers"):
        genomic_relationship(geno, allele_frequencies=np.array([0.5, 0.5, 0.5]))


def test_missing_genotypes_imputed_by_mean_with_a_count():
    geno = _genotypes()
    geno.iloc[0, 0] = np.nan
    geno.iloc[3, 7] = np.nan
    with pytest.warns(GenomicNotice, match="2 missing genotype"):
        result = genomic_relationship(geno, check_definite=False)
    assert result.n_imputed == 2
    M = geno.fillna(geno.mean()).to_numpy()
    p = geno.mean().to_numpy() / 2  # frequencies from the observed calls
    Zc = M - 2 * p
    expected = Zc @ Zc.T / (2 * np.sum(p * (1 - p)))
    np.testing.assert_allclose(result.relmat.matrix, expected, atol=1e-12)


def test_monomorphic_markers_dropped_with_notice():
    geno = _genotypes(m=60)
    geno["mono"] = 2.0
    with pytest.warns(GenomicNotice, match="1 monomorphic marker.*'mono'"):
        result = genomic_relationship(geno, ridge=0.01)
    assert result.dropped_markers == ("mono",) and result.n_markers == 60


def test_invalid_codes_are_named():
    geno = _genotypes(m=10)
    geno.loc["g3", "m4"] = 3
    with pytest.raises(DataError, match="marker\\(s\\) 'm4' of animal\\(s\\) 'g3'"):
        genomic_relationship(geno)


def test_presence_absence_coding_reads_as_homozygous():
    geno = _genotypes(m=200) // 2  # 0/1 codes
    as01 = genomic_relationship(geno, coding="01", check_definite=False)
    as012 = genomic_relationship(geno * 2, check_definite=False)
    np.testing.assert_allclose(as01.relmat.matrix, as012.relmat.matrix, atol=1e-12)
    with pytest.raises(DataError, match="0/1"):
        genomic_relationship(geno * 2, coding="01")


def test_singular_g_is_an_error_suggesting_blend_or_ridge():
    geno = _genotypes(n=60, m=30)  # singular: centred by its own frequencies, and n > m
    with pytest.raises(RelationshipError, match="not positive definite.*blend.*ridge"):
        genomic_relationship(geno)
    ridged = genomic_relationship(geno, ridge=0.01)
    assert np.linalg.eigvalsh(ridged.relmat.matrix)[0] >= 0.01 - 1e-10


def test_blend_with_pedigree_matrix():
    geno = _genotypes(n=10, m=100)
    ids = np.array([*geno.index, "other"], dtype=object)
    A = RelationshipMatrix(ids=ids, matrix=np.eye(11) + 0.1)
    G = genomic_relationship(geno, check_definite=False).relmat.matrix
    blended = genomic_relationship(geno, blend_with=A, blend_weight=0.2)
    np.testing.assert_allclose(
        blended.relmat.matrix, 0.8 * G + 0.2 * (np.eye(10) + 0.1), atol=1e-12
    )
    partial = RelationshipMatrix(ids=ids[2:], matrix=np.eye(9))
    with pytest.raises(RelationshipError, match="'g0', 'g1'"):
        genomic_relationship(geno, blend_with=partial, blend_weight=0.2)
    with pytest.raises(RelationshipError, match="between 0 and 1"):
        genomic_relationship(geno, blend_with=A, blend_weight=1.5)


def test_read_genotypes_csv(tmp_path):
    path = tmp_path / "geno.csv"
    path.write_text("id,m1,m2\n7,0,2\n8,1,NA\n9,2,1\n")
    geno = read_genotypes(path)
    assert list(geno.index) == ["7", "8", "9"] and np.isnan(geno.loc["8", "m2"])
    path.write_text("id,m1,m2\n7,0,2\n7,1,1\n")
    with pytest.raises(DataError, match="Duplicated animal ids in the genotypes: '7'"):
        read_genotypes(path)
    path.write_text("id,m1,m2\n7,0,x\n8,1,1\n")
    with pytest.raises(DataError, match="'m2' are not numeric"):
        read_genotypes(path)


def test_wheat_genomic_relationship():
    from conftest import shared_folder

    folder = shared_folder("wheat")
    geno = read_genotypes(folder / "wheat_X.csv")
    with pytest.raises(RelationshipError, match="not positive definite"):
        genomic_relationship(geno, coding="01")
    G = genomic_relationship(geno, coding="01", ridge=0.01)
    assert G.relmat.size == 599 and G.n_markers == 1279
    # inbred lines: the diagonal of G is near 1 + F = 2, like the pedigree A's (1.98)
    assert G.relmat.mean_diagonal == pytest.approx(2.0, abs=0.05)


def test_missing_genotypes_with_given_frequencies_are_imputed_by_2p():
    """With user-supplied p, a missing call is imputed by 2p (its expectation) and so is
    exactly 0 after centring — not the observed mean, which would leave it off zero."""
    geno = _genotypes(m=40)
    p = pd.Series(np.linspace(0.15, 0.85, 40), index=geno.columns)
    geno.iloc[2, 5] = np.nan
    geno.iloc[7, 11] = np.nan
    with pytest.warns(GenomicNotice, match="2 missing genotype.*imputed by 2p"):
        result = genomic_relationship(geno, allele_frequencies=p, check_definite=False)
    centred = geno.to_numpy() - 2 * p.to_numpy()
    centred[np.isnan(centred)] = 0.0
    expected = centred @ centred.T / (2 * np.sum(p * (1 - p)))
    np.testing.assert_allclose(result.relmat.matrix, expected, atol=1e-12)
