
# 011_result_format.pl again with its tasks in background workers (see tt_node).
use strict;
use warnings;
use TaskTrackerTest;
TaskTrackerTest::tt_rerun_with_background_workers('011_result_format.pl');
