package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestScheduleConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--schedule-tasks", "nightly-report=@daily"}, "backup-database"},
		{[]string{"--schedule-tasks", "backup-database=61 * * * *"}, "schedule-tasks"},
		{[]string{"--schedule-tasks", "backup-database"}, "name=schedule"},
		{[]string{"--schedule-retention", "acme=30d"}, "ns/type=age"},
		{[]string{"--schedule-retention", "acme/Gen=soon"}, "30d"},
		{[]string{"--schedule-backups", "0"}, "1 to 1000"},
		{[]string{"--schedule-health-targets", "db=localhost:1"}, "name=http://host:port"},
		{[]string{"--schedule-url", "127.0.0.1:8790"}, "base URL"},
		{[]string{"--schedule-sync", "1ms"}, "100ms"},
		{[]string{"--schedule-run-retention", "1m"}, "at least 1h"},
	} {
		var stderr bytes.Buffer
		_, err := parseConfig("serve", append([]string{"--data-dir", dir}, tc.args...), env(), &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%v) = %v; want an error mentioning %q", tc.args, err, tc.want)
		}
	}
	c, err := parseConfig("serve", []string{"--data-dir", dir, "--schedule-tasks", "backup-database=off, health-check-services=@every 1m",
		"--schedule-retention", "acme/Generation=30d,logs/Line=12h", "--schedule-health-targets", "db=http://10.0.0.5:8788/"}, env("DOTDO_SCHEDULE_BACKUPS=3"), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	s := c.Schedule
	if s.Tasks["backup-database"] != "off" || s.Tasks["health-check-services"] != "@every 1m" || s.Tasks["update-analytics"] != "@hourly" {
		t.Errorf("tasks = %v", s.Tasks)
	}
	if len(s.Retention) != 2 || s.Retention[0].MaxAge != 30*24*time.Hour || s.Retention[1].Type != "Line" || s.Retention[1].MaxAge != 12*time.Hour {
		t.Errorf("retention = %+v", s.Retention)
	}
	if s.Backups != 3 || s.HealthTargets["db"] != "http://10.0.0.5:8788" || s.AllowPrivate || s.Sync != 5*time.Second {
		t.Errorf("config = %+v", s)
	}
}
