package main

import (
	"context"
	"time"

	"github.com/jasperfed/jasper/dashboards"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/enrol"
)

// certExpiryFrom answers the dashboards' sensors view with the expiry of
// each enrolled sensor's latest certificate, as recorded by the replicated
// enrolment module (enrol.Module.Sensor: LastNotAfter, the latest NotAfter
// of any certificate issued to the sensor, renewals included). Sensors with
// no recorded certificate are left out.
func certExpiryFrom(mod *enrol.Module) dashboards.CertExpiry {
	return func(context.Context) (map[string]time.Time, error) {
		out := map[string]time.Time{}
		for _, id := range mod.Sensors() {
			info, ok := mod.Sensor(id)
			if !ok || info.LastNotAfter.Unix() <= 0 {
				continue
			}
			out[id] = info.LastNotAfter.UTC()
		}
		return out, nil
	}
}

// wireCertExpiry gives the dashboards the enrolment module's certificate
// expiry; attachEnrol calls it once the module is registered.
func wireCertExpiry(h *hub.Hub, mod *enrol.Module) { setDashboardsCertExpiry(h, certExpiryFrom(mod)) }
