package admin

import (
	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/reqtags"
)

// checkTags refuses request tags a key or team may not carry (reqtags:
// at most 32, each 1 to 128 bytes of UTF-8 without control characters).
// Every request of the key carries them, so a tag past the bounds is
// refused here rather than dropped from each request without a word.
// metadata is the key's or team's metadata object, whose tags LiteLLM
// keeps there; tags are a key's own list (nil for a team).
func checkTags(tags []string, metadata map[string]any) error {
	if err := reqtags.Check("tags", tags); err != nil {
		return apierror.BadRequest("tags", "%v", err)
	}
	if metadata != nil {
		if err := reqtags.CheckAny("metadata.tags", metadata["tags"]); err != nil {
			return apierror.BadRequest("metadata", "%v", err)
		}
	}
	return nil
}
