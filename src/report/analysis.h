/* analysis.h - from what the reader kept to the figures `modelgate report`
 * prints: per flag and variant the metrics, each treatment against the
 * control, the checks that guard against wrong conclusions, and the alarms.
 *
 * Scope. Only `rollout` records are randomized (DESIGN.md, "Flags"), so the
 * metrics, the comparisons and the checks use those alone; records with
 * other reasons are counted by variant and reason and shown as such.
 *
 * Statistics (stats.h has the formulas; docs/report.md the validity
 * conditions):
 *   - every metric is a ratio of per-unit sums (errors / requests, summed
 *     confidence / requests with a confidence, summed ms / requests, ...);
 *     its 95% interval uses the delta method with the unit as the sampling
 *     unit, and each treatment-minus-control difference Welch's t test on
 *     those variances. A test that is undefined (too few units, no
 *     variance, no events) says so and never alarms. Latency quantiles are
 *     descriptive (request level).
 *   - sample ratio mismatch: Pearson chi-square goodness of fit of units per
 *     variant against the most common logged weight set, counting the units
 *     seen while that set was in force; alarm at p < 0.001; untested when
 *     an expected count is below 5.
 *   - cohort balance: the top 5% of units by requests (ties broken by unit
 *     hash) are "heavy"; chi-square test of independence of heavy x variant;
 *     alarm at p < 0.001; untested when an expected count is below 5.
 *   - cross-flag co-assignment: over units seen in the rollouts of two
 *     flags, for every treatment A of one and B of the other, the 2 x 2
 *     table "in A" x "in B": Pearson's chi-square (Fisher's exact test when
 *     an expected count is below 5) and the odds ratio, which does not
 *     depend on the treatments' shares; alarm at p < 0.001 with an odds
 *     ratio of at least 2 or at most 1/2.
 *   - input axis: every metric by input.chars quartile and by tool count
 *     (0, 1-2, 3+), per variant, each treatment against the control in
 *     each cell; flagged when a treatment is worse with a Bonferroni-
 *     adjusted p < 0.01 (p times the number of cell comparisons of the flag)
 *     and both arms have at least 30 units in the cell; one alarm per
 *     flag, variant and metric, naming its cells.
 *   - feedback coverage: the share of rollout decisions with feedback,
 *     treatment against control (a proportion, as above); alarm at
 *     p < 0.001 (a biased feedback channel). */
#ifndef MG_REPORT_ANALYSIS_H
#define MG_REPORT_ANALYSIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decisions/decide.h"
#include "decisions/feedback.h"
#include "report/reader.h"
#include "report/stats.h"

#define MG_RP_ALPHA_SRM 0.001
#define MG_RP_ALPHA_BALANCE 0.001
#define MG_RP_ALPHA_COASSIGN 0.001
#define MG_RP_ALPHA_CELL 0.01
#define MG_RP_ALPHA_COVERAGE 0.001
#define MG_RP_COASSIGN_OR 2.0 /* odds ratio >= 2 or <= 1/2 */
#define MG_RP_MIN_EXPECTED 5.0 /* chi-square validity: every expected cell */
#define MG_RP_HEAVY_SHARE 0.05
#define MG_RP_MIN_CELL_UNITS 30
#define MG_RP_HIST_BINS 40
#define MG_RP_CELLS 7 /* 4 input.chars quartiles, 3 tool buckets */

enum mg_rp_metric {
  MG_RP_M_ERROR,
  MG_RP_M_FALLBACK,
  MG_RP_M_LOWCONF,
  MG_RP_M_CONFIDENCE,
  MG_RP_M_LATENCY,
  MG_RP_M_PROMPT,
  MG_RP_M_COMPLETION,
  MG_RP_M_COST,         /* cost / requests with a cost */
  MG_RP_M_COST_OK,      /* cost / successful answers (with a cost) */
  MG_RP_M_COVERAGE,     /* decisions with feedback / decisions */
  MG_RP_NMETRICS
};
/* The input-axis breakdown covers the first seven metrics; only those with
 * a direction (error, fallback and low-confidence rates, confidence,
 * latency) can be flagged and count in the Bonferroni factor. */
#define MG_RP_CELL_METRICS (MG_RP_M_COMPLETION + 1)

/* One feedback metric of one variant. */
struct mg_rp_fb_arm {
  struct mg_stats_ratio acc;    /* per unit: summed values / lines */
  double value, se;             /* mean per feedback line; delta-method se */
  uint64_t units, lines;
  bool has_cmp;
  struct mg_stats_diff cmp;
};

/* One feedback metric of one flag. */
struct mg_rp_fb_metric_report {
  const char *name;             /* borrowed from the log */
  bool boolean;                 /* declared so, or every value true/false */
  bool declared;                /* in the -c config's feedback.metrics */
  bool higher_is_better;        /* declared, else true */
  struct mg_rp_fb_arm *arms;    /* owned: one per variant */
};

struct mg_rp_metric_info {
  const char *key;   /* JSON name: "error_rate", ... */
  const char *label; /* for people: "error rate" */
  int worse;         /* +1: higher is worse; -1: lower is; 0: neither */
  bool rate;         /* a share (printed as a percentage) */
  const char *abbr;  /* for narrow columns: "low-conf" */
};
extern const struct mg_rp_metric_info mg_rp_metrics[MG_RP_NMETRICS];

/* One variant of one flag. */
struct mg_rp_variant {
  const char *name;       /* borrowed from the log */
  bool control;
  uint64_t records;       /* every reason */
  uint64_t units;         /* rollout units */
  uint64_t requests;      /* rollout records */
  struct mg_stats_ratio acc[MG_RP_NMETRICS];
  double value[MG_RP_NMETRICS]; /* NaN when undefined */
  double se[MG_RP_NMETRICS];    /* delta-method standard error */
  double p50, p95, p99;   /* latency quantiles, ms */
  double p95_lo, p95_hi;  /* the p95's interval at the decide level (each
                           * arm at 1 - alpha/2; see docs/report.md) */
  uint64_t tok_n, tok_prompt, tok_completion;
  bool has_cmp;           /* a treatment compared with the control */
  struct mg_stats_diff cmp[MG_RP_NMETRICS];
  /* sample ratio */
  uint64_t srm_units;     /* units seen under the most common weight set */
  double srm_expected;    /* expected share from those weights */
  /* cohort balance */
  uint64_t heavy;         /* heavy units in this arm */
  double heavy_requests;  /* share of the arm's requests from heavy units */
  double rpu_mean, rpu_p50, rpu_p90, rpu_p99; /* requests per unit */
  /* latency histogram: MG_RP_HIST_BINS bins over the flag's log10 range */
  uint64_t hist[MG_RP_HIST_BINS];
  double cost_total;      /* USD over rollout records */
  bool has_verdict;       /* a treatment judged by the flag's decide rule */
  struct mg_decide_verdict verdict;
};

/* One variant in one input-axis cell. */
struct mg_rp_cell_arm {
  uint64_t units, requests;
  double value[MG_RP_CELL_METRICS], se[MG_RP_CELL_METRICS];
  double p50, p95;
  bool has_cmp;
  struct mg_stats_diff cmp[MG_RP_CELL_METRICS];
  double p_adj[MG_RP_CELL_METRICS];   /* Bonferroni: min(1, p * tests) */
  bool flagged[MG_RP_CELL_METRICS];   /* worse, p_adj < 0.01, enough units */
};

struct mg_rp_cell {
  const char *axis;       /* "chars" or "tools" (static) */
  char label[64];         /* "chars <= 812", "tools 1-2", ... */
  double lo, hi;          /* the cell is lo < x <= hi (chars) or lo <= x <=
                           * hi (tools); -1 / +inf when open */
  uint64_t requests;
  struct mg_rp_cell_arm *arms; /* owned: one per variant */
};

struct mg_rp_flag_report {
  const struct mg_rp_flag *src; /* borrowed from the log */
  bool shown;                   /* has records and passes --flag */
  uint32_t narms;
  struct mg_rp_variant *v;      /* owned: narms */
  uint32_t control;             /* index into v, or MG_RP_NONE */
  const char *control_source;   /* static: how the control was chosen */
  bool control_option_missing;  /* --control named no variant of this flag */
  uint64_t records, rollout;
  uint64_t switched_units;      /* units seen in more than one arm */
  /* weights */
  int modal_wset;               /* index into src->wsets, or -1 */
  /* sample ratio mismatch */
  bool srm_tested;
  double srm_chi2, srm_df, srm_p;
  bool srm_alarm;
  const char *srm_note;         /* static: why not tested, or NULL */
  /* cohort balance */
  bool bal_tested;
  double bal_chi2, bal_df, bal_p;
  bool bal_alarm;
  uint64_t heavy_units, heavy_min_requests, bal_units;
  const char *bal_note;         /* static: why not tested, or NULL */
  /* input axis */
  double chars_edges[3];        /* quartile edges (integers) */
  uint32_t ncells;
  struct mg_rp_cell cells[MG_RP_CELLS];
  uint32_t cell_tests;          /* comparisons behind the Bonferroni factor
                                 * (directional metrics only) */
  uint32_t cov_tests;           /* feedback coverage comparisons tested */
  struct mg_rp_fb_metric_report *fbm; /* owned: one per log feedback metric
                                       * (log->nfb_metrics) */
  uint32_t nfbm;
  uint64_t fb_lines;            /* feedback values joined to this flag */
  const struct mg_decide *decide; /* borrowed from the options, or NULL */
  const char *cfg_off_variant;  /* borrowed: the -c config's off_variant of
                                 * the flag, or NULL */
  /* latency histogram range: log10 ms */
  double hist_lo, hist_hi;
};

/* One treatment of flag A against one treatment of flag B, over the units
 * both flags' rollouts share: the 2 x 2 table of memberships. */
struct mg_rp_copair {
  uint32_t arm_a, arm_b;        /* arm indexes in each flag */
  uint64_t both, a_only, b_only, neither;
  double expected;              /* "both" expected under independence */
  double odds_ratio;            /* (both neither) / (a_only b_only), with
                                 * 0.5 added to every cell when one is 0 */
  double or_lo, or_hi;          /* its 95% interval (Woolf, log scale) */
  double phi;                   /* the phi coefficient */
  const char *test;             /* static: "chi-square", "fisher", or NULL
                                 * when untested */
  const char *note;             /* static: why untested, or NULL */
  double chi2, p;               /* chi2 NaN for Fisher */
  bool alarm;                   /* p < 0.001 and OR >= 2 or <= 1/2 */
};

/* Two flags over the units they share. */
struct mg_rp_pair {
  uint32_t a, b;                /* indexes into report->flags */
  uint64_t common;              /* units in both rollouts, in one arm each */
  /* "in any treatment" of A x of B, for a first look */
  uint64_t both, a_only, b_only, neither;
  double expected;              /* common * share_a * share_b */
  double ratio;                 /* both / expected */
  struct mg_rp_copair *t;       /* owned: every treatment pair */
  size_t nt;
  bool tested;                  /* some treatment pair was tested */
  double chi2, p;               /* of the treatment pair with the least p */
  bool alarm;                   /* some treatment pair alarms */
};

/* One alarm: one cause (a flag's check, a flag pair, or a flag, variant
 * and metric over every input cell where it shows). */
struct mg_rp_alarm {
  const char *check;            /* static: "srm", "balance", "coassignment",
                                 * "input_axis", "feedback_coverage" */
  const char *flag;             /* borrowed from the log */
  const char *variant;          /* borrowed, or NULL */
  const char *metric;           /* static metric key, or NULL */
  const char *other_flag;       /* borrowed: coassignment's second flag */
  double p;                     /* the least (adjusted) p behind it */
  char **cells;                 /* owned: input_axis: the cells' labels */
  size_t ncells;
  char *text;                   /* owned: one sentence for people */
};

/* A flag of the -c config: its off_variant (the control DESIGN.md
 * compares against) and its decide rule, when it has one. */
struct mg_rp_decide_rule {
  const char *flag;             /* borrowed */
  const char *off_variant;      /* borrowed, or NULL */
  bool has_rule;
  struct mg_decide rule;        /* when has_rule */
};

struct mg_rp_options {
  const char *control;          /* --control, or NULL */
  const char *flag;             /* --flag, or NULL: every flag */
  const struct mg_feedback_config *feedback; /* borrowed, or NULL */
  const struct mg_rp_decide_rule *rules;     /* borrowed: nrules */
  size_t nrules;
};

struct mg_rp_report {
  const struct mg_rp_log *log;  /* borrowed: must outlive the report */
  struct mg_rp_flag_report *flags; /* owned: one per log flag, same order;
                                    * renderers print the shown ones */
  size_t nflags;
  struct mg_rp_pair *pairs;     /* owned */
  size_t npairs;
  struct mg_rp_alarm *alarms;   /* owned */
  size_t nalarms;
};

/* Analyse log into out. Returns 0, -ENOENT when opt->flag names no flag in
 * the logs, or -ENOMEM. out is always safe to free. */
int mg_rp_analyze(const struct mg_rp_log *log, const struct mg_rp_options *opt,
                  struct mg_rp_report *out) MG_WARN_UNUSED;
void mg_rp_report_free(struct mg_rp_report *r);

/* A metric's value for people: "4.10%" for rates, "0.812", "1234.5"
 * (latency, tokens); "n/a" for NaN. Returns buf. */
const char *mg_rp_fmt_value(char *buf, size_t n, enum mg_rp_metric m,
                            double v);
/* A difference: "+2.08 pp" for rates, "+0.012", "+35.2 ms"; "n/a". */
const char *mg_rp_fmt_diff(char *buf, size_t n, enum mg_rp_metric m,
                           double d);
/* Milliseconds: "1712.4"; "n/a" for NaN. */
const char *mg_rp_fmt_ms(char *buf, size_t n, double v);
/* A p-value: "0.043", "3.1e-05", "< 1e-300"; "n/a". */
const char *mg_rp_fmt_p(char *buf, size_t n, double p);
/* An integer with thousands separators: "1,000,000". */
const char *mg_rp_fmt_count(char *buf, size_t n, uint64_t v);

#endif
