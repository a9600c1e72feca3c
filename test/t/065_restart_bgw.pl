
# 005_restart.pl again with its tasks in background workers (see tt_node).
use strict;
use warnings;
use TaskTrackerTest;
TaskTrackerTest::tt_rerun_with_background_workers('005_restart.pl');
