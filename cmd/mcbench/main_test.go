package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/mcbridge/mcbridge/internal/testbroker"
)

func TestMain(m *testing.M) {
	testbroker.Main(m)
}

// A small run of the whole comparison against the real broker: every
// workload is reported, none lost or duplicated a message (the run fails
// if one did), and the ratios are printed.
func TestCompareSmallRun(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-amqp", testbroker.URL, "-clients", "4", "-messages", "400"}, &out)
	if err != nil {
		t.Fatalf("mcbench: %v\n%s", err, out.String())
	}
	for _, w := range []string{"raw publish+confirm", "raw consume+ack", "gateway set", "gateway get+delete",
		"raw publish+confirm (after)", "raw consume+ack (after)"} {
		row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(w) + `\s+\d+\s+\S+\s+\S+\s+0\s+0$`)
		if !row.MatchString(out.String()) {
			t.Errorf("no row for %q with 0 lost and 0 duplicated in\n%s", w, out.String())
		}
	}
	for _, line := range []string{"ratio set / raw publish:", "ratio get+delete / raw consume:", "p99 added by gateway (get+delete):"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("no %q in\n%s", line, out.String())
		}
	}
}

func TestPublishSweepSmallRun(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-amqp", testbroker.URL, "-publish-sweep", "-clients", "4", "-messages", "200"}, &out)
	if err != nil {
		t.Fatalf("mcbench -publish-sweep: %v\n%s", err, out.String())
	}
	rows := regexp.MustCompile(`(?m)^\d+\s+\d+\s+\d+\s+\d+, \d+$`).FindAllString(out.String(), -1)
	if len(rows) != 6 {
		t.Fatalf("want 6 layouts, got %d in\n%s", len(rows), out.String())
	}
}

func TestAckSweepSmallRun(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-amqp", testbroker.URL, "-ack-sweep", "-messages", "200"}, &out)
	if err != nil {
		t.Fatalf("mcbench -ack-sweep: %v\n%s", err, out.String())
	}
	rows := regexp.MustCompile(`(?m)^(each alone|every \d+, multiple)\s+\d+, \d+$`).FindAllString(out.String(), -1)
	if len(rows) != 3 {
		t.Fatalf("want 3 ack batchings, got %d in\n%s", len(rows), out.String())
	}
}
