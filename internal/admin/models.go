package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
)

// Models connects the model API to the live router.
type Models struct {
	// Deployments are every deployment the router serves now; dbModel
	// reports whether one came from the API (else from the config file).
	Deployments func() (deps []config.Deployment, dbModel func(id string) bool)
	// Reload reads the API's models from the store and rebuilds the router.
	Reload func(ctx context.Context) error
	// State reports a deployment's run-time state: whether it is cooling
	// down (and until when) and whether its last health check passed.
	State func(id string) (coolingUntil time.Time, healthy bool)
	// Disabled is why a deployment is not served ("" when it is).
	Disabled func(id string) string
}

// WithModels enables /model/new, /model/update, /model/delete and /model/info.
func (a *API) WithModels(m *Models) *API {
	a.models = m
	return a
}

func (a *API) registerModels(mux Mux) {
	if a.models == nil {
		return
	}
	mux.Handle("POST /model/new", a.route(writeAll, a.modelNew))
	mux.Handle("POST /model/update", a.route(writeAll, a.modelUpdate))
	mux.Handle("POST /model/delete", a.route(writeAll, a.modelDelete))
	for _, p := range []string{"/model/info", "/v1/model/info", "/v2/model/info"} {
		mux.Handle("GET "+p, a.route(readOwn, a.modelInfo))
	}
}

// modelEntry is a model_list entry as the API takes it.
type modelEntry struct {
	ModelName     string         `json:"model_name"`
	LiteLLMParams map[string]any `json:"litellm_params"`
	ModelInfo     map[string]any `json:"model_info"`
}

func (e *modelEntry) id() string {
	id, _ := e.ModelInfo["id"].(string)
	return id
}

// validate checks the entry with the config file's rules.
func validateEntry(e *modelEntry) (config.Deployment, error) {
	raw, err := json.Marshal(e)
	if err != nil {
		return config.Deployment{}, apierror.BadRequest("", "%v", err)
	}
	d, err := config.ParseModelEntry(raw)
	if err == nil {
		err = provider.Check(&d) // the router's own checks (provider, api_base)
	}
	if err != nil {
		return config.Deployment{}, apierror.BadRequest("litellm_params", "%v", err)
	}
	return d, nil
}

func (a *API) modelNew(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var e modelEntry
	if _, err := decode(r, &e); err != nil {
		return err
	}
	if e.ModelInfo == nil {
		e.ModelInfo = map[string]any{}
	}
	if e.id() == "" {
		e.ModelInfo["id"] = uuid.NewString()
	}
	d, err := validateEntry(&e)
	if err != nil {
		return err
	}
	deps, _ := a.models.Deployments()
	if slices.ContainsFunc(deps, func(x config.Deployment) bool { return x.ID == d.ID }) {
		return apierror.BadRequest("model_info.id", "a model with id %q exists", d.ID)
	}
	raw, _ := json.Marshal(e)
	if err := a.store.PutModel(r.Context(), &store.Model{ID: d.ID, Entry: raw}); err != nil {
		return apierror.Internal(err)
	}
	if err := a.models.Reload(r.Context()); err != nil {
		return apierror.Internal(err)
	}
	a.audit(r.Context(), p, "created", "model", d.ID, nil, redacted(&d, true))
	return writeJSON(w, redacted(&d, true))
}

// storedEntry finds an API-added model; config models cannot be edited here.
func (a *API) storedEntry(ctx context.Context, id string) (*store.Model, *modelEntry, error) {
	if id == "" {
		return nil, nil, apierror.BadRequest("id", "the model id is required")
	}
	ms, err := a.store.ListModels(ctx)
	if err != nil {
		return nil, nil, apierror.Internal(err)
	}
	for i := range ms {
		if ms[i].ID == id {
			var e modelEntry
			if err := json.Unmarshal(ms[i].Entry, &e); err != nil {
				return nil, nil, apierror.Internal(err)
			}
			return &ms[i], &e, nil
		}
	}
	if deps, _ := a.models.Deployments(); slices.ContainsFunc(deps, func(x config.Deployment) bool { return x.ID == id }) {
		return nil, nil, apierror.BadRequest("id", "model %q is defined in the config file: edit the file and send SIGHUP", id)
	}
	return nil, nil, apierror.NotFound("id", "no model with id %q", id)
}

func (a *API) modelUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		modelEntry
		ID string `json:"id"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	id := req.ID
	if id == "" {
		id = req.id()
	}
	m, e, err := a.storedEntry(r.Context(), id)
	if err != nil {
		return err
	}
	if req.ModelName != "" {
		e.ModelName = req.ModelName
	}
	for k, v := range req.LiteLLMParams {
		if v == nil {
			delete(e.LiteLLMParams, k)
		} else {
			e.LiteLLMParams[k] = v
		}
	}
	for k, v := range req.ModelInfo {
		if k != "id" {
			e.ModelInfo[k] = v
		}
	}
	d, err := validateEntry(e)
	if err != nil {
		return err
	}
	m.Entry, _ = json.Marshal(e)
	if err := a.store.PutModel(r.Context(), m); err != nil {
		return apierror.Internal(err)
	}
	if err := a.models.Reload(r.Context()); err != nil {
		return apierror.Internal(err)
	}
	a.audit(r.Context(), p, "updated", "model", d.ID, nil, redacted(&d, true))
	return writeJSON(w, redacted(&d, true))
}

func (a *API) modelDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		ID string `json:"id"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if _, _, err := a.storedEntry(r.Context(), req.ID); err != nil {
		return err
	}
	if err := a.store.DeleteModel(r.Context(), req.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return apierror.Internal(err)
	}
	if err := a.models.Reload(r.Context()); err != nil {
		return apierror.Internal(err)
	}
	a.audit(r.Context(), p, "deleted", "model", req.ID, nil, nil)
	return writeJSON(w, map[string]any{"message": "model deleted", "id": req.ID})
}

// modelInfo lists the deployments the caller may use (admins: all), without
// secrets. ?litellm_model_id= selects one.
func (a *API) modelInfo(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	deps, dbModel := a.models.Deployments()
	want := r.URL.Query().Get("litellm_model_id")
	out := []map[string]any{}
	for i := range deps {
		d := &deps[i]
		if want != "" && d.ID != want {
			continue
		}
		if !seesAll(p) && !p.MayUse(d.ModelName, d.AccessGroups) {
			continue
		}
		m := redacted(d, dbModel(d.ID))
		info := m["model_info"].(map[string]any)
		// A wildcard deployment is priced request by request, by the model
		// the client names; any other needs a price of its own.
		price, priced := provider.DeploymentPrice(d)
		info["priced"] = priced || d.Model == "" || strings.HasSuffix(d.Model, "*")
		if priced {
			info["input_cost_per_token"], info["output_cost_per_token"] = price.InputPerToken, price.OutputPerToken
		}
		if a.models.State != nil {
			until, healthy := a.models.State(d.ID)
			info["healthy"] = healthy
			if !until.IsZero() {
				info["cooldown_until"] = until.UTC().Format(time.RFC3339)
			}
		}
		if a.models.Disabled != nil {
			if why := a.models.Disabled(d.ID); why != "" {
				info := m["model_info"].(map[string]any)
				info["disabled"], info["disabled_reason"], info["healthy"] = true, why, false
			}
		}
		out = append(out, m)
	}
	return writeJSON(w, map[string]any{"data": out})
}

// redacted is a deployment in LiteLLM's /model/info shape, with no
// credential: api_key and header values are never returned.
func redacted(d *config.Deployment, db bool) map[string]any {
	params := map[string]any{"model": d.Provider + "/" + d.Model}
	set := func(k string, v any, ok bool) {
		if ok {
			params[k] = v
		}
	}
	set("api_base", provider.ShownBase(d.APIBase), d.APIBase != "") // credentials in the URL stay hidden
	set("api_version", d.APIVersion, d.APIVersion != "")
	set("rpm", d.RPM, d.RPM > 0)
	set("tpm", d.TPM, d.TPM > 0)
	set("weight", d.Weight, d.Weight > 0)
	set("order", d.Order, d.Order != 0)
	set("timeout", d.Timeout.Seconds(), d.Timeout > 0)
	set("stream_timeout", d.StreamTimeout.Seconds(), d.StreamTimeout > 0)
	if d.InputCostPerToken != nil {
		params["input_cost_per_token"] = *d.InputCostPerToken
	}
	if d.OutputCostPerToken != nil {
		params["output_cost_per_token"] = *d.OutputCostPerToken
	}
	if d.InputCostPerSecond != nil {
		params["input_cost_per_second"] = *d.InputCostPerSecond
	}
	if d.OutputCostPerSecond != nil {
		params["output_cost_per_second"] = *d.OutputCostPerSecond
	}
	for k, v := range map[string]*float64{"input_cost_per_pixel": d.InputCostPerPixel, "input_cost_per_image": d.InputCostPerImage,
		"output_cost_per_image": d.OutputCostPerImage, "input_cost_per_character": d.InputCostPerCharacter} {
		if v != nil {
			params[k] = *v
		}
	}
	if len(d.Headers) > 0 {
		names := make([]string, 0, len(d.Headers))
		for k := range d.Headers {
			names = append(names, k)
		}
		slices.Sort(names)
		params["headers"] = names // names only: values may be credentials
	}
	info := map[string]any{"id": d.ID, "db_model": db, "access_groups": d.AccessGroups, "litellm_provider": d.Provider}
	if d.BaseModel != "" {
		info["base_model"] = d.BaseModel
	}
	return map[string]any{"model_name": d.ModelName, "litellm_params": params, "model_info": info}
}
