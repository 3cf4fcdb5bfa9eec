package server

import (
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// enforcement says how a request's budgets are enforced: strict when
// litellm_settings.budget_enforcement is strict or the key's
// metadata.budget_enforcement is (a key can opt into strict, not out of
// it). It is the one place the mode is decided; the ledger asks it only
// when Redis is away.
func (s *Server) enforcement(accounts []*ledger.Account) ledger.Enforcement {
	if mode, _ := ledger.ParseEnforcement(s.cfg.Load().LiteLLMSettings.BudgetEnforcement); mode == ledger.EnforceStrict {
		return mode
	}
	for _, a := range accounts {
		if a.Kind != store.KindKey {
			continue
		}
		if md, ok := s.snap.KeyMetadata(a.Name()); ok {
			if v, ok := md["budget_enforcement"].(string); ok {
				if mode, err := ledger.ParseEnforcement(v); err == nil {
					return mode
				}
			}
		}
	}
	return ledger.EnforceDefault
}
