package demo

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Summary is what `jasper demo --headless` prints at the end.
type Summary struct {
	// Findings counts the findings the dashboard API shows, by type
	// (FindingsSource "dashboard"); when the dashboard shows none, the
	// distinct findings named in the webhooks received ("webhooks").
	Findings       map[string]int `json:"findings"`
	FindingsTotal  int            `json:"findings_total"`
	FindingsSource string         `json:"findings_source"`
	// AlertedFindings counts the distinct findings named in the webhooks
	// received, by type.
	AlertedFindings map[string]int `json:"alerted_findings"`
	// Deliveries counts what arrived, by channel: e-mails in the demo
	// mailbox, distinct webhook deliveries with a valid signature.
	Deliveries      map[string]int `json:"deliveries"`
	WebhookRejected int            `json:"webhook_rejected"`
	// DeliveriesByRecipient splits Deliveries by recipient id (cert-jp...).
	DeliveriesByRecipient map[string]map[string]int `json:"deliveries_by_recipient"`
	// DashboardOK: the dashboard answered authenticated API requests with
	// traffic data.
	DashboardOK    bool   `json:"dashboard_ok"`
	DashboardError string `json:"dashboard_error,omitempty"`
	// FirstAlertSeconds is the time from start to the first alert
	// received (0: none).
	FirstAlertSeconds float64         `json:"first_alert_seconds"`
	RunSeconds        float64         `json:"run_seconds"`
	Hubs              int             `json:"hubs"`
	Leader            string          `json:"leader"`
	Extensions        []string        `json:"extensions"`
	Storage           string          `json:"storage"`
	Geo               string          `json:"geo"`
	Batches           uint64          `json:"batches"`
	Packets           uint64          `json:"packets"`
	Sensors           []SensorSummary `json:"sensors"`
	URL               string          `json:"url"`
	Errors            []string        `json:"errors,omitempty"`
}

// SensorSummary is one sensor's committed traffic.
type SensorSummary struct {
	ID      string `json:"id"`
	Country string `json:"country"`
	Batches uint64 `json:"batches"`
	Rows    uint64 `json:"rows"`
	Packets uint64 `json:"packets"`
}

// Summary collects the figures from the running demo (before Stop).
func (d *Demo) Summary(ctx context.Context) (s Summary) {
	s = Summary{Findings: map[string]int{}, Deliveries: map[string]int{}, Hubs: len(d.hubs), Storage: d.storage,
		Geo: d.geo.Kind, URL: d.frontURL, RunSeconds: time.Since(d.t0).Seconds(), FirstAlertSeconds: d.FirstAlert().Seconds()}
	for _, e := range d.deps.Extensions {
		s.Extensions = append(s.Extensions, e.Name)
	}
	s.DeliveriesByRecipient = map[string]map[string]int{}
	count := func(rcpt, channel string) {
		if s.DeliveriesByRecipient[rcpt] == nil {
			s.DeliveriesByRecipient[rcpt] = map[string]int{}
		}
		s.DeliveriesByRecipient[rcpt][channel]++
	}
	if d.mail != nil {
		s.Deliveries["email"] = d.mail.Count()
		for _, m := range d.mail.Messages() {
			for _, to := range m.To {
				local, _, _ := strings.Cut(to, "@")
				count(local, "email")
			}
		}
	}
	if d.hooks != nil {
		for _, h := range d.hooks.Hooks() {
			count(h.Recipient, "webhook")
		}
	}
	if d.hooks != nil {
		s.Deliveries["webhook"], s.WebhookRejected = d.hooks.Count()
		s.AlertedFindings = d.hooks.Findings()
	}
	defer func() {
		s.FindingsSource = "dashboard"
		if len(s.Findings) == 0 && len(s.AlertedFindings) > 0 {
			s.Findings, s.FindingsSource = s.AlertedFindings, "webhooks"
		}
		s.FindingsTotal = 0
		for _, n := range s.Findings {
			s.FindingsTotal += n
		}
	}()
	if st, err := d.hubStatus(ctx); err != nil {
		s.Errors = append(s.Errors, "hub status: "+err.Error())
	} else {
		s.Leader = st.LeaderId
		for _, x := range st.Sensors {
			s.Batches += x.Batches
			s.Packets += x.Packets
			s.Sensors = append(s.Sensors, SensorSummary{ID: x.SensorId, Country: x.Country, Batches: x.Batches, Rows: x.Rows, Packets: x.Packets})
		}
		sort.Slice(s.Sensors, func(i, j int) bool { return s.Sensors[i].ID < s.Sensors[j].ID })
	}
	if d.front == nil || d.apiToken == "" || !d.exts["dashboards"] {
		s.DashboardError = "no dashboard in this binary"
		return s
	}
	var ov struct {
		Points []struct {
			Packets map[string]uint64 `json:"packets"`
		} `json:"points"`
	}
	if err := d.apiGet(ctx, "/api/overview?range=1h", &ov); err != nil {
		s.DashboardError = err.Error()
	} else {
		var pk uint64
		for _, p := range ov.Points {
			for _, n := range p.Packets {
				pk += n
			}
		}
		if pk > 0 {
			s.DashboardOK = true
		} else {
			s.DashboardError = fmt.Sprintf("/api/overview answered %d points without packets", len(ov.Points))
		}
	}
	var fs struct {
		Findings []struct {
			Type string `json:"type"`
		} `json:"findings"`
	}
	if err := d.apiGet(ctx, "/api/findings?state=all&range=6h", &fs); err != nil {
		s.Errors = append(s.Errors, "findings: "+err.Error())
	} else {
		for _, f := range fs.Findings {
			s.Findings[f.Type]++
		}
	}
	var ew struct {
		Surges []struct {
			Type string `json:"type"`
		} `json:"surges"`
	}
	if err := d.apiGet(ctx, "/api/early-warning?range=6h", &ew); err != nil {
		s.Errors = append(s.Errors, "early warning: "+err.Error())
	} else {
		for _, f := range ew.Surges {
			s.Findings[f.Type]++
		}
	}
	return s
}
