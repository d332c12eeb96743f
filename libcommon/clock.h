/*
 * clock: the two clocks. Wall time (unix ms) is for records others read; monotonic time is
 * for deadlines and durations inside a process, immune to NTP steps.
 */
#ifndef AF_CLOCK_H
#define AF_CLOCK_H

#include <stdint.h>

int64_t af_clock_wall_ms(void); /* unix ms */
int64_t af_clock_mono_ms(void); /* monotonic ms, arbitrary origin */
int64_t af_clock_mono_us(void); /* monotonic us, arbitrary origin */

#endif
