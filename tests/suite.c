/* suite: see suite.h. */
#include "suite.h"

struct ferry_proc fp;

void
cleanup(void)
{
	ferry_cleanup(&fp);
}
