/* log.h - the operational log on stderr (not the decision log). */
#ifndef MG_LOG_H
#define MG_LOG_H

enum mg_log_level { MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_WARN, MG_LOG_ERROR };

/* Messages below this level are dropped. Default: MG_LOG_INFO. */
void mg_log_set_level(enum mg_log_level level);
enum mg_log_level mg_log_get_level(void);
/* Parse "debug", "info", "warn" or "error"; -1 when unknown. */
int mg_log_level_parse(const char *s);

/* One line: "<RFC 3339 time> <level> <message>". Never pass secrets. */
void mg_log(enum mg_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define mg_debug(...) mg_log(MG_LOG_DEBUG, __VA_ARGS__)
#define mg_info(...) mg_log(MG_LOG_INFO, __VA_ARGS__)
#define mg_warn(...) mg_log(MG_LOG_WARN, __VA_ARGS__)
#define mg_error(...) mg_log(MG_LOG_ERROR, __VA_ARGS__)

#endif
