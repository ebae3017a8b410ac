//! The OpenAPI document: what the handlers declare, plus what they cannot see from where they are — the
//! refusals of the layers around them, and the rules of the names they take.

use std::sync::LazyLock;

use http::Method;
use utoipa::Number;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, Schema};

use super::policy::Policies;
use crate::config::Config;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "FileWallBall", description = "HTTP file service"),
    components(schemas(
        crate::error::ErrorBody,
        crate::error::ErrorCode,
        crate::domain::SortKey,
        crate::domain::SortOrder,
        crate::media::thumbnail::ThumbSize
    )),
    modifiers(&BearerAuth, &NameSchemas),
    security(("api_key" = []))
)]
pub(super) struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `FileName`, `Tag` and `TagList`: the names and tags the service takes, which are those that survive sanitising.
struct NameSchemas;

static PATTERNS: LazyLock<[(&str, String, &str); 3]> = LazyLock::new(|| {
    use crate::domain::names;
    [
        (
            "FileName",
            names::file_name_pattern(),
            "A file name. Only what follows the last `/` or `\\` is kept, without control or other invisible \
             characters (Unicode Cc, Cf, Zl, Zp), without dots and spaces at its ends, and cut to 255 bytes; \
             something must be left.",
        ),
        (
            "Tag",
            names::tag_pattern(),
            "A tag: at most 64 characters once trimmed, none invisible; stored lowercase. A blank one is ignored.",
        ),
        ("TagList", names::tag_list_pattern(), "Up to 32 comma-separated tags."),
    ]
});

impl utoipa::Modify for NameSchemas {
    fn modify(&self, openapi: &mut OpenApi) {
        let schemas = &mut openapi.components.get_or_insert_with(Default::default).schemas;
        for (name, pattern, description) in PATTERNS.iter() {
            let schema = ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern.as_str()))
                .description(Some(*description))
                .build();
            schemas.insert((*name).into(), schema.into());
        }
    }
}

/// For `schema_with`: a reference to `FileName`.
pub(crate) fn file_name() -> Ref {
    Ref::from_schema_name("FileName")
}

/// For `schema_with`: a `FileName`, or `null` for no change.
pub(crate) fn file_name_or_null() -> Schema {
    or_null(file_name())
}

/// For `schema_with`: a reference to `Tag`.
pub(crate) fn tag() -> Ref {
    Ref::from_schema_name("Tag")
}

/// For `schema_with`: a reference to `TagList`.
pub(crate) fn tag_list() -> Ref {
    Ref::from_schema_name("TagList")
}

/// For `schema_with`: up to 32 `Tag`s, or `null` for no change.
pub(crate) fn tags_or_null() -> Schema {
    or_null(utoipa::openapi::schema::ArrayBuilder::new().items(tag()).max_items(Some(32)))
}

fn or_null(schema: impl Into<RefOr<Schema>>) -> Schema {
    Schema::OneOf(OneOfBuilder::new().item(schema).item(ObjectBuilder::new().schema_type(Type::Null)).build())
}

/// An upload's multipart form, as documented: the form is read field by field as it streams, never into a struct.
pub(crate) struct UploadForm;

impl utoipa::PartialSchema for UploadForm {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "file",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                    .description(Some("The bytes; the part's file name names the file unless `name` is sent.")),
            )
            .required("file")
            .property("name", file_name())
            .property("tags", tag_list())
            .property("visibility", Ref::from_schema_name("Visibility"))
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)))
            .into()
    }
}

impl utoipa::ToSchema for UploadForm {}

/// For `schema_with`: a user id, or `all`.
pub(crate) fn user_id_or_all() -> Schema {
    let id = ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)));
    let all = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["all"]));
    Schema::OneOf(OneOfBuilder::new().item(id).item(all).build())
}

/// Bounds that come from the configuration rather than the code.
pub(super) fn document_config(openapi: &mut OpenApi, config: &Config) {
    let schemas = &mut openapi.components.get_or_insert_with(Default::default).schemas;
    if let Some(RefOr::T(Schema::Object(share))) = schemas.get_mut("CreateShare")
        && let Some(RefOr::T(Schema::Object(ttl))) = share.properties.get_mut("expires_in_secs")
    {
        ttl.maximum = Some(Number::UInt(config.share.max_ttl_secs as usize));
    }
}

/// Documents the refusals every operation can answer with besides its own, each with the error body: those of the
/// layers every request passes (a malformed query, a server failure), those of what the operation takes (path
/// parameters, a body), and those of its route's policy (admission, the rate limit, API keys). A status an
/// operation declares itself keeps its description; one without a body gets the error body.
pub(super) fn document_refusals(openapi: &mut OpenApi, policies: &Policies) {
    for (path, item) in &mut openapi.paths.paths {
        for (method, operation) in operations(item) {
            let mut refusals = vec![
                ("400", "The query string, a parameter, a header or the body is malformed."),
                ("500", "The service failed; the error's `request_id` finds it in the log."),
            ];
            if path.contains('{') {
                refusals.push(("404", "Nothing is found at this path for this caller."));
            }
            if operation.request_body.is_some() {
                refusals.extend([
                    ("408", "The body stopped arriving for longer than the idle timeout."),
                    ("413", "The body is larger than this operation accepts."),
                    ("415", "The body's content type is not one this operation reads."),
                    ("422", "The body is well-formed but does not describe a valid request."),
                ]);
            }
            if let Some(policy) = policies.get(&method, path) {
                refusals.push(("429", "Over the rate limit, or too many refused keys from this address."));
                refusals.push(("503", "The service is at its limit of requests in flight; try again shortly."));
                if policy.identify {
                    refusals.push(("401", "The API key is missing, unknown, revoked or expired."));
                }
            }
            let responses = &mut operation.responses.responses;
            for (status, description) in refusals {
                responses.entry(status.into()).or_insert_with(|| Response::new(description).into());
            }
            for (status, response) in responses.iter_mut() {
                if let RefOr::T(response) = response
                    && status.starts_with(['4', '5'])
                    && response.content.is_empty()
                {
                    let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
                    response.content.insert("application/json".into(), body.into());
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::POST, &mut item.post),
        (Method::PUT, &mut item.put),
        (Method::PATCH, &mut item.patch),
        (Method::DELETE, &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|o| (method, o)))
}
