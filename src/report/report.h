/* report.h - `modelgate report`: the cohort analysis of decision logs
 * (DESIGN.md, "`modelgate report`"; docs/report.md).
 *
 * Pure: libc, libm and common/; no libuv, no curl. The layers below it:
 * reader.h (logs into aggregates), analysis.h (statistics and checks),
 * render.h (text, JSON, HTML), stats.h (the mathematics). */
#ifndef MG_REPORT_H
#define MG_REPORT_H

#include <stdio.h>

/* The usage lines of the command, for `modelgate help` too. */
extern const char mg_report_usage[];

/* Run the command. argv[0] is the command's name ("report"), the options
 * and LOG arguments follow. Output goes to stdout (or --out), messages to
 * stderr. Returns the exit status: 0 done (alarms or not), 1 a log could
 * not be read or the output not written, 2 a usage error. */
int mg_report_main(int argc, char **argv);

#endif
