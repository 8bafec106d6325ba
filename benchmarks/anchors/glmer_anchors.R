# glmer (lme4, nAGQ = 1: the Laplace approximation) on the test data sets of tests/data, with
# tolerances tight enough that its optimiser's error is below 1e-7: the numbers that
# tests/test_laplace.py holds bayes_animal's `method="ml"` to. Run from the repository root:
#   Rscript benchmarks/anchors/glmer_anchors.R > tests/data/glmer_anchors.json
suppressMessages(library(lme4))
control <- glmerControl(optimizer = "bobyqa", tolPwrss = 1e-12,
                        optCtrl = list(rhoend = 1e-12, maxfun = 1e6),
                        check.conv.grad = "ignore")
one <- function(name, formula, data, family) {
  fit <- glmer(formula, data = data, family = family, nAGQ = 1, control = control)
  vc <- as.data.frame(VarCorr(fit))
  variances <- setNames(as.list(vc$vcov), vc$grp)
  sprintf('"%s": {"variances": {%s}, "fixed": {%s}, "loglik": %.12g}', name,
          paste(sprintf('"%s": %.12g', names(variances), unlist(variances)), collapse = ", "),
          paste(sprintf('"%s": %.12g', names(fixef(fit)), fixef(fit)), collapse = ", "),
          as.numeric(logLik(fit)))
}
cbpp <- read.csv("tests/data/cbpp.csv", colClasses = c(herd = "factor", period = "factor"))
binary <- read.csv("tests/data/glmm_binary.csv")
binary$sex <- factor(binary$sex)
counts <- read.csv("tests/data/glmm_counts.csv")
counts$obs <- factor(counts$obs)
out <- c(
  one("cbpp_logit", cbind(incidence, failures) ~ period + (1 | herd), cbpp, binomial("logit")),
  one("cbpp_probit", cbind(incidence, failures) ~ period + (1 | herd), cbpp, binomial("probit")),
  one("binary_logit", y ~ x + sex + (1 | group), binary, binomial("logit")),
  one("binary_probit", y ~ x + sex + (1 | group), binary, binomial("probit")),
  one("counts_poisson", y ~ x + (1 | group), counts, poisson("log")),
  one("counts_overdispersed", y ~ x + (1 | group) + (1 | obs), counts, poisson("log"))
)
cat("{\n  ", paste(out, collapse = ",\n  "), "\n}\n", sep = "")
