/* test_breaker.c - the circuit breaker's state machine, driven by a fake
 * clock: both opening rules, the sliding window, cooldown, bounded probes,
 * and outcomes that arrive after the state they were let through in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fallbacks/breaker.h"

static int64_t clk; /* the fake clock, in ms */

static struct mg_breaker_cfg cfg_consecutive(uint32_t n) {
  struct mg_breaker_cfg c = {
      .enabled = true,
      .failures = n,
      .error_rate = 0,
      .window_ms = 10000,
      .min_requests = 0,
      .cooldown_ms = 5000,
      .probes = 1,
  };
  return c;
}

static struct mg_breaker_cfg cfg_rate(double rate, uint32_t min_requests) {
  struct mg_breaker_cfg c = {
      .enabled = true,
      .failures = 0,
      .error_rate = rate,
      .window_ms = 10000, /* ten slots of 1 s */
      .min_requests = min_requests,
      .cooldown_ms = 5000,
      .probes = 1,
  };
  return c;
}

/* allow() then record(): what the proxy does for one request. */
static int request(struct mg_breaker *b, const struct mg_breaker_cfg *c,
                   bool ok) {
  bool probe;
  assert_true(mg_breaker_allow(b, c, clk, &probe));
  return mg_breaker_record(b, c, clk, ok, probe);
}

/* Open b with the consecutive rule of c and check it. */
static void open_it(struct mg_breaker *b, const struct mg_breaker_cfg *c) {
  uint32_t i;
  for (i = 0; i + 1 < c->failures; i++)
    assert_int_equal(request(b, c, false), -1);
  assert_int_equal(request(b, c, false), MG_BREAKER_OPEN);
  assert_int_equal(b->state, MG_BREAKER_OPEN);
}

static void test_consecutive_opens(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(3);
  struct mg_breaker b;
  bool probe = true;

  mg_breaker_init(&b);
  clk = 1000;
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(b.consecutive, 2);
  assert_int_equal(request(&b, &c, false), MG_BREAKER_OPEN);
  assert_int_equal(b.opened_at, 1000);
  assert_int_equal(b.transitions, 1);
  /* Open: refused, and not counted as a probe. */
  assert_false(mg_breaker_allow(&b, &c, clk, &probe));
  assert_false(probe);
  clk += 4999;
  assert_false(mg_breaker_allow(&b, &c, clk, &probe));
  assert_int_equal(b.state, MG_BREAKER_OPEN);
}

static void test_success_resets_count(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(3);
  struct mg_breaker b;
  int i;

  mg_breaker_init(&b);
  clk = 0;
  for (i = 0; i < 20; i++) {
    assert_int_equal(request(&b, &c, false), -1);
    assert_int_equal(request(&b, &c, false), -1);
    assert_int_equal(request(&b, &c, true), -1);
    assert_int_equal(b.consecutive, 0);
    clk += 10;
  }
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  assert_int_equal(b.transitions, 0);
}

static void test_rate_needs_min_requests(void **state) {
  /* Half or more failing, over at least 10 requests. */
  struct mg_breaker_cfg c = cfg_rate(0.5, 10);
  struct mg_breaker b;
  int i;

  mg_breaker_init(&b);
  clk = 100000;
  /* 9 failures in a row: 100% failing, but too few requests. */
  for (i = 0; i < 9; i++)
    assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  /* The tenth request, a success, brings the window to min_requests with
   * 90% failing: the rule now counts, and trips. */
  assert_int_equal(request(&b, &c, true), MG_BREAKER_OPEN);
}

static void test_rate_below_threshold(void **state) {
  struct mg_breaker_cfg c = cfg_rate(0.5, 10);
  struct mg_breaker b;
  int i;

  mg_breaker_init(&b);
  clk = 0;
  /* 40% failing (ok, fail, ok, fail, ok, ...) over 100 requests spread
   * over the window: the share never reaches half once 10 are in. */
  for (i = 0; i < 100; i++) {
    assert_int_equal(request(&b, &c, i % 5 != 1 && i % 5 != 3), -1);
    clk += 97;
  }
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  /* Exactly at the rate opens ("failures / requests >= error_rate"). */
  mg_breaker_init(&b);
  for (i = 0; i < 9; i++)
    assert_int_equal(request(&b, &c, i % 2 == 0), -1);
  /* 4 failures of 9 so far; a fifth makes 5 of 10 = 0.5. */
  assert_int_equal(request(&b, &c, false), MG_BREAKER_OPEN);
}

static void test_rate_window_slides(void **state) {
  struct mg_breaker_cfg c = cfg_rate(0.5, 10);
  struct mg_breaker b;
  int i;

  mg_breaker_init(&b);
  clk = 50000;
  /* 9 failures now: not enough requests yet. */
  for (i = 0; i < 9; i++)
    assert_int_equal(request(&b, &c, false), -1);
  /* Eleven seconds later they have slid out of the 10 s window: 9
   * successes and 1 failure are all the window holds. */
  clk += 11000;
  for (i = 0; i < 9; i++)
    assert_int_equal(request(&b, &c, true), -1);
  assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(b.state, MG_BREAKER_CLOSED);

  /* Partly slid: failures 9.5 s ago are still in, ones 10.5 s ago are not. */
  mg_breaker_init(&b);
  clk = 200000;
  for (i = 0; i < 5; i++)
    assert_int_equal(request(&b, &c, false), -1); /* t = 200.0 s */
  clk += 1000;
  for (i = 0; i < 4; i++)
    assert_int_equal(request(&b, &c, false), -1); /* t = 201.0 s */
  clk += 9500;                                    /* t = 210.5 s */
  /* The slot of 200 s started 10.5 s ago: out. The slot of 201 s: in. So
   * the window holds 4 failures; 6 successes make 10 requests at 40%. */
  for (i = 0; i < 6; i++)
    assert_int_equal(request(&b, &c, true), -1);
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  /* One more failure: 5 of 11 = 45%, still under. Another: 6 of 12. */
  assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(request(&b, &c, false), MG_BREAKER_OPEN);
}

static void test_rate_slot_reuse(void **state) {
  /* A slot index comes round again every window: its old counts must not
   * mix with the new ones. */
  struct mg_breaker_cfg c = cfg_rate(0.5, 4);
  struct mg_breaker b;

  mg_breaker_init(&b);
  clk = 3000;
  assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(request(&b, &c, false), -1);
  clk = 13000; /* same slot index, one window later */
  assert_int_equal(request(&b, &c, true), -1);
  assert_int_equal(request(&b, &c, true), -1);
  assert_int_equal(request(&b, &c, true), -1);
  assert_int_equal(request(&b, &c, false), -1); /* 1 of 4 */
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
}

static void test_cooldown_half_open(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(2);
  struct mg_breaker b;
  bool probe = false;

  mg_breaker_init(&b);
  clk = 7;
  open_it(&b, &c);
  clk += c.cooldown_ms - 1;
  assert_false(mg_breaker_allow(&b, &c, clk, &probe));
  assert_int_equal(b.state, MG_BREAKER_OPEN);
  clk += 1;
  assert_true(mg_breaker_allow(&b, &c, clk, &probe));
  assert_true(probe);
  assert_int_equal(b.state, MG_BREAKER_HALF_OPEN);
  assert_int_equal(b.transitions, 2);
  assert_int_equal(b.probes_out, 1);
}

static void test_probes_bounded(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(1);
  struct mg_breaker b;
  bool p1 = false, p2 = false, p3 = true;

  c.probes = 2;
  mg_breaker_init(&b);
  clk = 0;
  open_it(&b, &c);
  clk += c.cooldown_ms;
  assert_true(mg_breaker_allow(&b, &c, clk, &p1));
  assert_true(mg_breaker_allow(&b, &c, clk, &p2));
  assert_true(p1 && p2);
  assert_false(mg_breaker_allow(&b, &c, clk, &p3));
  assert_false(p3);
  clk += 100000; /* time alone frees no probe */
  assert_false(mg_breaker_allow(&b, &c, clk, &p3));
  assert_int_equal(b.probes_out, 2);
  /* A cancelled probe gives its slot back without deciding anything. */
  mg_breaker_release(&b, &c, true);
  assert_int_equal(b.state, MG_BREAKER_HALF_OPEN);
  assert_true(mg_breaker_allow(&b, &c, clk, &p3));
  assert_true(p3);
  assert_false(mg_breaker_allow(&b, &c, clk, NULL));
}

static void test_probe_success_closes(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(3);
  struct mg_breaker b;
  bool probe;

  c.error_rate = 0.5;
  c.min_requests = 4;
  mg_breaker_init(&b);
  clk = 1000;
  open_it(&b, &c); /* 3 failures: also 100% of the window */
  clk += c.cooldown_ms;
  assert_true(mg_breaker_allow(&b, &c, clk, &probe));
  assert_true(probe);
  assert_int_equal(mg_breaker_record(&b, &c, clk, true, probe),
                   MG_BREAKER_CLOSED);
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  assert_int_equal(b.consecutive, 0);
  assert_int_equal(b.probes_out, 0);
  assert_int_equal(b.transitions, 3);
  /* The failures that opened it are forgotten: one new failure, still
   * inside the old window, opens neither rule (1 of 1 < min_requests, 1 <
   * 3 in a row). */
  assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(request(&b, &c, true), -1);
  assert_int_equal(request(&b, &c, true), -1);
  assert_int_equal(request(&b, &c, false), MG_BREAKER_OPEN); /* 2 of 4 */
}

static void test_probe_failure_reopens(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(2);
  struct mg_breaker b;
  bool probe;

  mg_breaker_init(&b);
  clk = 0;
  open_it(&b, &c);
  clk = 6000;
  assert_true(mg_breaker_allow(&b, &c, clk, &probe));
  assert_true(probe);
  clk = 6500;
  assert_int_equal(mg_breaker_record(&b, &c, clk, false, probe),
                   MG_BREAKER_OPEN);
  assert_int_equal(b.opened_at, 6500);
  assert_int_equal(b.probes_out, 0);
  /* The cooldown runs again from the probe's failure. */
  clk = 6500 + 4999;
  assert_false(mg_breaker_allow(&b, &c, clk, &probe));
  clk = 6500 + 5000;
  assert_true(mg_breaker_allow(&b, &c, clk, &probe));
  assert_true(probe);
  assert_int_equal(b.transitions, 4);
}

static void test_late_records(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(2);
  struct mg_breaker b;
  bool old1, old2, old3, probe, probe2;

  c.probes = 2;
  mg_breaker_init(&b);
  clk = 0;
  /* Three requests go out while closed; they answer much later. */
  assert_true(mg_breaker_allow(&b, &c, clk, &old1));
  assert_true(mg_breaker_allow(&b, &c, clk, &old2));
  assert_true(mg_breaker_allow(&b, &c, clk, &old3));
  assert_false(old1 || old2 || old3);
  open_it(&b, &c);

  /* While open: an old failure does not restart the cooldown, an old
   * success does not close it. */
  clk = 3000;
  assert_int_equal(mg_breaker_record(&b, &c, clk, false, old1), -1);
  assert_int_equal(b.opened_at, 0);
  assert_int_equal(mg_breaker_record(&b, &c, clk, true, old2), -1);
  assert_int_equal(b.state, MG_BREAKER_OPEN);

  /* While half-open only probes decide. */
  clk = 5000;
  assert_true(mg_breaker_allow(&b, &c, clk, &probe));
  assert_true(probe);
  assert_int_equal(mg_breaker_record(&b, &c, clk, true, old3), -1);
  assert_int_equal(b.state, MG_BREAKER_HALF_OPEN);
  assert_int_equal(b.probes_out, 1);
  assert_int_equal(mg_breaker_record(&b, &c, clk, false, false), -1);
  assert_int_equal(b.state, MG_BREAKER_HALF_OPEN);

  /* Two probes out; the first fails and reopens. The second answers while
   * open: ignored, the cooldown stands. */
  assert_true(mg_breaker_allow(&b, &c, clk, &probe2));
  assert_true(probe2);
  clk = 5100;
  assert_int_equal(mg_breaker_record(&b, &c, clk, false, probe),
                   MG_BREAKER_OPEN);
  clk = 5200;
  assert_int_equal(mg_breaker_record(&b, &c, clk, true, probe2), -1);
  assert_int_equal(b.state, MG_BREAKER_OPEN);
  assert_int_equal(b.opened_at, 5100);

  /* Next spell: a probe succeeds and closes; its sibling's late failure
   * counts as an ordinary failure while closed (one, not enough). */
  clk = 10100;
  assert_true(mg_breaker_allow(&b, &c, clk, &probe));
  assert_true(mg_breaker_allow(&b, &c, clk, &probe2));
  assert_int_equal(mg_breaker_record(&b, &c, clk, true, probe),
                   MG_BREAKER_CLOSED);
  assert_int_equal(mg_breaker_record(&b, &c, clk, false, probe2), -1);
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  assert_int_equal(b.consecutive, 1);

  /* A straggler probe in a half-open spell with no probe out is ignored. */
  assert_int_equal(request(&b, &c, false), MG_BREAKER_OPEN);
  clk += c.cooldown_ms;
  assert_true(mg_breaker_allow(&b, &c, clk, &probe));
  mg_breaker_release(&b, &c, probe);
  assert_int_equal(b.probes_out, 0);
  assert_int_equal(mg_breaker_record(&b, &c, clk, true, true), -1);
  assert_int_equal(b.state, MG_BREAKER_HALF_OPEN);
}

static void test_disabled(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(1);
  struct mg_breaker b;
  bool probe = true;
  int i;

  c.enabled = false;
  c.error_rate = 0.01;
  mg_breaker_init(&b);
  clk = 0;
  for (i = 0; i < 100; i++) {
    assert_true(mg_breaker_allow(&b, &c, clk, &probe));
    assert_false(probe);
    assert_int_equal(mg_breaker_record(&b, &c, clk, false, probe), -1);
    clk += 1;
  }
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  assert_int_equal(b.consecutive, 0);
  assert_int_equal(b.transitions, 0);
}

static void test_transitions_and_names(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(1);
  struct mg_breaker b;
  bool probe;
  int cycle;

  mg_breaker_init(&b);
  clk = 0;
  /* open -> half-open -> closed, three times: 9 transitions. */
  for (cycle = 0; cycle < 3; cycle++) {
    assert_int_equal(request(&b, &c, false), MG_BREAKER_OPEN);
    clk += c.cooldown_ms;
    assert_true(mg_breaker_allow(&b, &c, clk, &probe));
    assert_int_equal(mg_breaker_record(&b, &c, clk, true, probe),
                     MG_BREAKER_CLOSED);
    /* Successes while closed change nothing. */
    assert_int_equal(request(&b, &c, true), -1);
  }
  assert_int_equal(b.transitions, 9);
  assert_string_equal(mg_breaker_state_name(MG_BREAKER_CLOSED), "closed");
  assert_string_equal(mg_breaker_state_name(MG_BREAKER_OPEN), "open");
  assert_string_equal(mg_breaker_state_name(MG_BREAKER_HALF_OPEN),
                      "half_open");
}

static void test_odd_configs(void **state) {
  /* Windows shorter than the slot count, zero probes, negative clocks. */
  struct mg_breaker_cfg c = cfg_rate(0.5, 2);
  struct mg_breaker b;
  bool probe;

  c.window_ms = 3;
  c.probes = 0;
  mg_breaker_init(&b);
  clk = -12345;
  assert_int_equal(request(&b, &c, true), -1);
  clk += 100; /* far outside a 3 ms window */
  assert_int_equal(request(&b, &c, false), -1);
  assert_int_equal(request(&b, &c, false), MG_BREAKER_OPEN);
  clk += c.cooldown_ms;
  assert_true(mg_breaker_allow(&b, &c, clk, &probe));
  assert_true(probe);
  assert_false(mg_breaker_allow(&b, &c, clk, &probe));
}

/* A hint from another instance opens a closed breaker with the cooldown
 * from now; this instance then probes for itself. A breaker already open
 * or half-open, or disabled, is left alone (issue 13.4). */
static void test_trip_hint(void **state) {
  struct mg_breaker_cfg c = cfg_consecutive(3), off = cfg_consecutive(3);
  struct mg_breaker b;
  bool probe = false;

  mg_breaker_init(&b);
  clk = 1000;
  assert_true(mg_breaker_trip(&b, &c, clk));
  assert_int_equal(b.state, MG_BREAKER_OPEN);
  assert_false(mg_breaker_allow(&b, &c, clk + c.cooldown_ms - 1, &probe));
  assert_false(mg_breaker_trip(&b, &c, clk + 10)); /* open already */
  assert_true(mg_breaker_allow(&b, &c, clk + c.cooldown_ms, &probe));
  assert_true(probe);
  assert_int_equal(b.state, MG_BREAKER_HALF_OPEN);
  /* Half-open: its own probe decides, not a hint. */
  assert_false(mg_breaker_trip(&b, &c, clk + c.cooldown_ms));
  assert_int_equal(b.state, MG_BREAKER_HALF_OPEN);
  assert_int_equal(mg_breaker_record(&b, &c, clk + c.cooldown_ms, true, true),
                   MG_BREAKER_CLOSED);
  mg_breaker_destroy(&b);

  off.enabled = false;
  mg_breaker_init(&b);
  assert_false(mg_breaker_trip(&b, &off, clk));
  assert_int_equal(b.state, MG_BREAKER_CLOSED);
  mg_breaker_destroy(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_trip_hint),
      cmocka_unit_test(test_consecutive_opens),
      cmocka_unit_test(test_success_resets_count),
      cmocka_unit_test(test_rate_needs_min_requests),
      cmocka_unit_test(test_rate_below_threshold),
      cmocka_unit_test(test_rate_window_slides),
      cmocka_unit_test(test_rate_slot_reuse),
      cmocka_unit_test(test_cooldown_half_open),
      cmocka_unit_test(test_probes_bounded),
      cmocka_unit_test(test_probe_success_closes),
      cmocka_unit_test(test_probe_failure_reopens),
      cmocka_unit_test(test_late_records),
      cmocka_unit_test(test_disabled),
      cmocka_unit_test(test_transitions_and_names),
      cmocka_unit_test(test_odd_configs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
