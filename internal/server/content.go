package server

import (
	"fmt"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/gateway"
	"github.com/tollgate/tollgate/internal/redact"
)

// contentLogging reads what the gateway may keep of requests' messages and
// answers: general_settings.store_prompts_in_spend_logs and
// content_logging, litellm_settings.turn_off_message_logging. Secrets and
// every PII class are masked unless the operator says otherwise.
func contentLogging(cfg *config.Config) (gateway.ContentLogging, error) {
	cl := cfg.GeneralSettings.ContentLogging
	out := gateway.ContentLogging{
		SpendLogs: cfg.GeneralSettings.StorePromptsInSpendLogs,
		Off:       cfg.LiteLLMSettings.TurnOffMessageLogging,
		// LiteLLM's redact_user_api_key_info: no key information in the
		// logs that leave the process (payloads, spans).
		RedactKeyInfo: cfg.LiteLLMSettings.RedactUserAPIKeyInfo,
	}
	if cl.MaxFieldBytes != nil {
		out.MaxBytes = *cl.MaxFieldBytes
	}
	var classes []redact.Class
	if cl.RedactSecrets == nil || *cl.RedactSecrets {
		classes = append(classes, redact.Secrets...)
	}
	if cl.RedactPII == nil {
		classes = append(classes, redact.PII...)
	} else {
		for _, name := range *cl.RedactPII {
			c := redact.Class(name)
			if !redact.Known(c) {
				_, err := redact.New([]redact.Class{c})
				return out, fmt.Errorf("general_settings.content_logging.redact_pii: %w", err)
			}
			classes = append(classes, c)
		}
	}
	r, err := redact.New(classes)
	if err != nil {
		return out, fmt.Errorf("general_settings.content_logging: %w", err)
	}
	out.Redactor = r
	return out, nil
}
