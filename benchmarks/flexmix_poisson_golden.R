# Golden values for tests/test_golden_flexmix.py: a mixture of two Poisson
# regressions fitted by R's flexmix on its own NPreg data.
#
# Rerun from the repository root (needs R and flexmix, e.g.
# apt-get install r-cran-flexmix):
#
#     Rscript benchmarks/flexmix_poisson_golden.R
#
# It writes
#
#   tests/data/npreg.csv                  the columns x and yp of NPreg
#                                         (200 rows, full precision)
#   tests/data/npreg_flexmix_poisson.json flexmix's fit of
#                                         yp ~ x, k = 2, FLXMRglm(family = "poisson"),
#                                         constant mixing proportions
#
# The test reads these two files only; it never needs R.
#
# The fit is the best of N_STARTS random starts (seeds 1..N_STARTS), each run
# to a tight tolerance, so that the golden log-likelihood is close to the
# maximum (on the 2.3-18 fit, 2e-7 below it) rather than where flexmix's
# default rule happens to leave EM. The JSON also says how many starts reached
# the best log-likelihood.

suppressPackageStartupMessages(library(flexmix))

N_STARTS <- 10
CONTROL <- list(iter.max = 1000, tolerance = 1e-10)

data("NPreg", package = "flexmix")
d <- NPreg[, c("x", "yp")]

num <- function(v) sprintf("%.17g", v)

out_dir <- file.path("tests", "data")
if (!dir.exists(out_dir)) {
  stop("Run this script from the repository root (tests/data not found).")
}

writeLines(c("x,yp", paste(num(d$x), num(d$yp), sep = ",")),
           file.path(out_dir, "npreg.csv"))

fits <- list()
for (seed in seq_len(N_STARTS)) {
  set.seed(seed)
  m <- flexmix(yp ~ x, data = d, k = 2,
               model = FLXMRglm(family = "poisson"), control = CONTROL)
  if (m@k == 2) fits[[length(fits) + 1]] <- list(seed = seed, model = m)
}
if (length(fits) == 0) stop("No start kept two components.")
logliks <- vapply(fits, function(f) as.numeric(logLik(f$model)), numeric(1))
best <- fits[[which.max(logliks)]]
m <- best$model
loglik <- as.numeric(logLik(m))
at_best <- sum(logliks > loglik - 1e-6)

# Components ordered by intercept, so that reruns list them in the same order.
coefs <- parameters(m)  # rows coef.(Intercept), coef.x; one column per component
order_k <- order(coefs[1, ])
coefs <- coefs[, order_k, drop = FALSE]
proportions <- prior(m)[order_k]

component <- function(j) {
  sprintf('    {"intercept": %s, "slope": %s, "proportion": %s}',
          num(coefs[1, j]), num(coefs[2, j]), num(proportions[j]))
}
json <- c(
  "{",
  sprintf('  "model": "%s",',
          "flexmix(yp ~ x, data = NPreg, k = 2, model = FLXMRglm(family = 'poisson'))"),
  sprintf('  "control": {"iter.max": %d, "tolerance": %s},',
          CONTROL$iter.max, num(CONTROL$tolerance)),
  sprintf('  "n_samples": %d,', nrow(d)),
  sprintf('  "loglik": %s,', num(loglik)),
  sprintf('  "df": %d,', attr(logLik(m), "df")),
  '  "components": [',
  paste(vapply(seq_len(ncol(coefs)), component, character(1)), collapse = ",\n"),
  "  ],",
  sprintf('  "n_iter": %d,', m@iter),
  sprintf('  "converged": %s,', tolower(as.character(m@converged))),
  sprintf('  "seed": %d,', best$seed),
  sprintf('  "starts": %d,', N_STARTS),
  sprintf('  "starts_at_best": %d,', at_best),
  sprintf('  "flexmix_version": "%s",', as.character(packageVersion("flexmix"))),
  sprintf('  "r_version": "%s"', R.version.string),
  "}"
)
writeLines(json, file.path(out_dir, "npreg_flexmix_poisson.json"))

cat(sprintf("logLik %.10f after %d iterations (seed %d; %d of %d starts reach it)\n",
            loglik, m@iter, best$seed, at_best, N_STARTS))
print(rbind(coefs, prior = proportions))
