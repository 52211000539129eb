package main

import (
	"sync"

	"github.com/jasperfed/jasper/alerting"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/internal/config"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func init() {
	hubExtensions = append(hubExtensions, hub.Extension{Name: "alerting", Attach: attachAlerting})
}

// attachAlerting wires alert delivery into a hub. The replicated outbox
// module is always registered (every hub must run the same modules); with
// no `alerting:` section the directory is empty and nothing is sent. It
// takes its findings from the hub's detectors through hubFindings, gives
// the dashboards acknowledge/silence, and runs the delivery worker (which
// acts only on the leader) as a hub service; with alerting.listen set it
// also serves its admin API and TAXII 2.1 there.
func attachAlerting(h *hub.Hub) error {
	cfg := alerting.DefaultConfig()
	if err := h.Section("alerting", &cfg); err != nil {
		return err
	}
	path := h.Config().Path
	cfg.RecipientsFile = config.Resolve(path, cfg.RecipientsFile)
	cfg.SMTPCAFile = config.Resolve(path, cfg.SMTPCAFile)
	cfg.SMTP.PGPKeyFile = config.Resolve(path, cfg.SMTP.PGPKeyFile)
	a, err := alerting.New(cfg, alerting.Deps{
		Store: h.Store(), Log: h.Log(), Registerer: h.Registerer(),
		Node: h.Config().NodeID, TLS: h.Config().TLS,
	})
	if err != nil {
		return err
	}
	h.RegisterModule(a.Module())
	subscribeHubFindings(h, a.Module().ObserveFinding)
	setDashboardsActions(h, a)
	h.AddService(a)
	return nil
}

// hubFindings fans a hub's detector findings out to the extensions that
// want them, per hub (the demo runs several hubs in one process). The
// detect extension passes publishHubFindings(h) to its Detector.OnFinding;
// the callbacks run inside the FSM apply, in log order, on every hub.
var hubFindings struct {
	sync.Mutex
	subs map[*hub.Hub][]func(*jasperv1.Finding)
}

// subscribeHubFindings registers fn for hub h's findings (from Attach).
func subscribeHubFindings(h *hub.Hub, fn func(*jasperv1.Finding)) {
	hubFindings.Lock()
	defer hubFindings.Unlock()
	if hubFindings.subs == nil {
		hubFindings.subs = map[*hub.Hub][]func(*jasperv1.Finding){}
	}
	hubFindings.subs[h] = append(hubFindings.subs[h], fn)
}

// publishHubFindings returns the callback that hands a finding of hub h
// to every subscriber, in subscription order.
func publishHubFindings(h *hub.Hub) func(*jasperv1.Finding) {
	return func(f *jasperv1.Finding) {
		hubFindings.Lock()
		subs := hubFindings.subs[h]
		hubFindings.Unlock()
		for _, fn := range subs {
			fn(f)
		}
	}
}
