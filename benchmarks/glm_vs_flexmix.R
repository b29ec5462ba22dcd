# flexmix side of benchmarks/glm_vs_flexmix.py (which writes the data and
# calls this script; it is not meant to be run on its own):
#
#     Rscript benchmarks/glm_vs_flexmix.R DATA.csv REPEATS TOLERANCES MAX_ITERS
#
# DATA.csv has the columns x, z, y and label (the initial partition, 1-based).
# TOLERANCES and MAX_ITERS are comma-separated lists of the same length; for
# each pair (tol, max_iter), the model
#
#     flexmix(y ~ x, k = 2, cluster = label,
#             model = FLXMRglm(family = "poisson"),
#             concomitant = FLXPmultinom(~ z),
#             control = list(iter.max = max_iter, minprior = 0, tolerance = tol))
#
# is fitted REPEATS times. Only the flexmix() call is timed (system.time);
# R's start-up, reading the CSV and loading the package are not. Output: INFO
# lines (versions, BLAS) and one RESULT line per pair (log-likelihood,
# iterations, every elapsed time, the coefficients of the last fit).
# tolerance = 0 never stops early: it runs exactly max_iter iterations.

suppressPackageStartupMessages(library(flexmix))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
repeats <- as.integer(args[2])
tolerances <- as.numeric(strsplit(args[3], ",")[[1]])
max_iters <- as.integer(strsplit(args[4], ",")[[1]])
stopifnot(length(max_iters) == length(tolerances))
labels <- d$label

cat(sprintf("INFO flexmix %s; %s\n", as.character(packageVersion("flexmix")),
            R.version.string))
cat(sprintf("INFO BLAS %s\n", extSoftVersion()[["BLAS"]]))
cat(sprintf("INFO LAPACK %s\n", La_library()))

num <- function(v) paste(sprintf("%.10g", v), collapse = ",")

for (i in seq_along(tolerances)) {
  tol <- tolerances[i]
  max_iter <- max_iters[i]
  elapsed <- numeric(repeats)
  for (r in seq_len(repeats)) {
    set.seed(0)  # the start is given (cluster =); nothing else is random
    elapsed[r] <- system.time(
      m <- flexmix(y ~ x, data = d, k = 2, cluster = labels,
                   model = FLXMRglm(family = "poisson"),
                   concomitant = FLXPmultinom(~ z),
                   control = list(iter.max = max_iter, minprior = 0,
                                  tolerance = tol))
    )[["elapsed"]]
  }
  expert <- parameters(m)  # rows coef.(Intercept), coef.x; one column per component
  gate <- parameters(m, which = "concomitant")  # rows (Intercept), z; column 1 is 0
  cat(sprintf(paste(
    "RESULT tol=%g max_iter=%d loglik=%.10f iter=%d converged=%s k=%d times=%s",
    "intercepts=%s slopes=%s gate_intercept=%s gate_slope=%s\n"),
    tol, max_iter, as.numeric(logLik(m)), m@iter, m@converged, m@k,
    paste(sprintf("%.6f", elapsed), collapse = ","),
    num(expert[1, ]), num(expert[2, ]),
    num(gate[1, ncol(gate)]), num(gate[2, ncol(gate)])))
}
