//! The policy engine: everything parsed at load, and the decision on
//! each step.
//!
//! At load the engine builds the schema and parses and validates the
//! policies. For every action, and for every tool, it then selects the
//! policies whose scope can match, split into plain policies (permits and
//! un-annotated forbids) and hold policies (forbids annotated `@hold`).
//! Per request it only builds the Cedar request and the few entities the
//! request refers to; see `decide`.
//!
//! NOTE: Cedar's authorizer costs about 1 µs per policy in the set it is
//! given (measured with Cedar 4.14 on a 2-core VM), so decision latency
//! grows with the number of policies whose action and resource scope match
//! a step, not with the total.

mod decide;
mod guard;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicySet, ResourceConstraint, RestrictedExpression, Schema, SchemaFragment,
};
use serde_json::Value;

use crate::arguments::types::{RecordType, arguments_type};
use crate::error::PolicyLoadError;
use crate::load::{LoadedPolicy, load_policies};
use crate::schema::{
    CALL_MODEL, DELEGATE, GET_PROMPT, LIST_TOOLS, MemoryShape, NAMESPACE, READ_RESOURCE,
    SERVER_REQUEST, START_TASK, schema_json,
};
use crate::{EngineOptions, RouteDef, ToolDef};

/// File name extension of policy files in a policy directory.
const POLICY_EXTENSION: &str = "cedar";

/// Id of the single gateway entity that `start_task` applies to.
const GATEWAY_ID: &str = "warden";

/// Decides each step of a task against a validated set of Cedar policies.
///
/// The engine is immutable once built; share it behind an `Arc` and build
/// a new one to reload.
pub struct PolicyEngine {
    schema: Schema,
    schema_text: String,
    environment: String,
    authorizer: Authorizer,
    names: TypeNames,
    tools: HashMap<String, CompiledTool>,
    start_task: ActionPolicies,
    delegate: ActionPolicies,
    read_resource: ActionPolicies,
    get_prompt: ActionPolicies,
    server_request: ActionPolicies,
    call_model: ActionPolicies,
    routes: HashMap<String, CompiledRoute>,
    /// Class and sum names of `context.memory`.
    memory: MemoryShape,
    /// Whether any policy reads `context.memory`.
    uses_memory: bool,
    policy_count: usize,
    /// Non-empty `@reason` and `@hold` texts by policy id, read once at
    /// load because Cedar parses the key on every annotation lookup.
    texts: HashMap<String, PolicyTexts>,
}

/// The texts a decision quotes from a policy.
#[derive(Default)]
struct PolicyTexts {
    reason: Option<String>,
    hold: Option<String>,
}

/// Entity type names, built once.
struct TypeNames {
    agent: EntityTypeName,
    server: EntityTypeName,
    tool: EntityTypeName,
    resource: EntityTypeName,
    prompt: EntityTypeName,
    model: EntityTypeName,
    route: EntityTypeName,
    path: EntityTypeName,
    gateway: EntityTypeName,
    action: EntityTypeName,
}

/// A tool with everything a request about it needs.
struct CompiledTool {
    definition: ToolDef,
    arguments: RecordType,
    uid: EntityUid,
    /// The tool entity, whose parent is its server.
    entity: Entity,
    /// Policies for calling this tool.
    call: ActionPolicies,
    /// Policies for listing this tool.
    list: ActionPolicies,
}

/// An HTTP route with everything a request to it needs.
struct CompiledRoute {
    uid: EntityUid,
    /// The route entity.
    entity: Entity,
    /// Type of `context.body`, when the route declares a body schema.
    body: Option<RecordType>,
    /// Names of the query parameters declared in `context.query`.
    query_params: Vec<String>,
    policies: ActionPolicies,
}

impl CompiledRoute {
    fn new(
        names: &TypeNames,
        route: &RouteDef,
        body: Option<RecordType>,
        policies: &[LoadedPolicy],
        action_entities: &Entities,
    ) -> Result<CompiledRoute, PolicyLoadError> {
        let uid = names.uid(&names.route, &route.name);
        let classes = route
            .classes
            .iter()
            .map(|class| RestrictedExpression::new_string(class.clone()));
        let labels = route
            .labels
            .iter()
            .map(|label| RestrictedExpression::new_string(label.clone()));
        let attributes = [
            ("name", RestrictedExpression::new_string(route.name.clone())),
            ("classes", RestrictedExpression::new_set(classes)),
            ("labels", RestrictedExpression::new_set(labels)),
            ("host", RestrictedExpression::new_string(route.host.clone())),
        ]
        .map(|(name, value)| (name.to_owned(), value));
        let entity = Entity::new_with_tags(uid.clone(), attributes, [], []).map_err(|error| {
            PolicyLoadError::Tool {
                tool: route.action(),
                message: error.to_string(),
            }
        })?;
        let policies =
            ActionPolicies::new(names, &route.action(), None, policies, action_entities)?;
        Ok(CompiledRoute {
            uid,
            entity,
            body,
            query_params: route.query_params.clone(),
            policies,
        })
    }
}

/// The policies whose scope can match one action, optionally on one tool,
/// and that action's entity.
struct ActionPolicies {
    uid: EntityUid,
    plain: PolicySet,
    /// The plain policies split by path guard, when any has one.
    guarded: Option<guard::GuardedPolicies>,
    hold: PolicySet,
    /// The action, with the action groups it belongs to as parents.
    entity: Entity,
}

/// The tool a policy set is prepared for.
struct ToolScope<'a> {
    tool: &'a EntityUid,
    server: &'a EntityUid,
    facts: guard::StaticFacts<'a>,
}

impl PolicyEngine {
    /// Loads every `*.cedar` file of `dir`, in file name order, and builds
    /// the engine. Subdirectories and files whose names start with `.` are
    /// skipped. An empty directory loads, and then every step is denied.
    pub fn load_dir(
        dir: &Path,
        tools: &[ToolDef],
        options: EngineOptions,
    ) -> Result<PolicyEngine, PolicyLoadError> {
        let read_error = |path: &Path, source| PolicyLoadError::Read {
            path: path.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|error| read_error(dir, error))? {
            let entry = entry.map_err(|error| read_error(dir, error))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_policy = path.extension().is_some_and(|ext| ext == POLICY_EXTENSION);
            if !is_policy || name.starts_with('.') || path.is_dir() {
                continue;
            }
            files.push((name, path));
        }
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        for (name, path) in files {
            let text = std::fs::read_to_string(&path).map_err(|error| read_error(&path, error))?;
            sources.push((name, text));
        }
        Self::from_sources(&sources, tools, options)
    }

    /// Builds the engine from policy texts given as (file name, text) pairs.
    /// The file names appear in policy ids and error messages.
    pub fn from_sources(
        sources: &[(String, String)],
        tools: &[ToolDef],
        options: EngineOptions,
    ) -> Result<PolicyEngine, PolicyLoadError> {
        let names = TypeNames::new()?;
        let argument_types = tool_argument_types(tools)?;
        let route_types = route_body_types(&options.routes)?;
        let memory = memory_shape(tools, &options.routes);
        let schema_value = schema_json(
            argument_types
                .iter()
                .map(|(qualified, arguments, _)| (qualified.as_str(), arguments)),
            options
                .routes
                .iter()
                .zip(&route_types)
                .map(|(route, body)| {
                    (route.action(), route.query_params.as_slice(), body.as_ref())
                }),
            &memory,
        );
        let schema_text = SchemaFragment::from_json_value(schema_value.clone())
            .map_err(|error| schema_error(&error))?
            .to_cedarschema()
            .map_err(|error| schema_error(&error))?;
        let schema = Schema::from_json_value(schema_value).map_err(|error| schema_error(&error))?;

        let policies = load_policies(sources, &schema).map_err(PolicyLoadError::Policies)?;
        let action_entities = schema
            .action_entities()
            .map_err(|error| schema_error(&error))?;

        let mut compiled = HashMap::with_capacity(argument_types.len());
        for (qualified, arguments, definition) in argument_types {
            let tool = CompiledTool::new(
                &names,
                qualified.clone(),
                arguments,
                definition.clone(),
                &policies,
                &action_entities,
                &options.environment,
            )?;
            compiled.insert(qualified, tool);
        }
        let global =
            |action_id| ActionPolicies::new(&names, action_id, None, &policies, &action_entities);
        let start_task = global(START_TASK)?;
        let delegate = global(DELEGATE)?;
        let read_resource = global(READ_RESOURCE)?;
        let get_prompt = global(GET_PROMPT)?;
        let server_request = global(SERVER_REQUEST)?;
        let call_model = global(CALL_MODEL)?;
        // A conservative test on the text: a policy that mentions `memory`
        // anywhere counts as reading it.
        let uses_memory = policies
            .iter()
            .any(|entry| entry.policy.to_string().contains("memory"));
        let mut routes = HashMap::with_capacity(options.routes.len());
        for (route, body) in options.routes.iter().zip(route_types) {
            let compiled = CompiledRoute::new(&names, route, body, &policies, &action_entities)?;
            routes.insert(route.name.clone(), compiled);
        }

        tracing::info!(
            policy.count = policies.len(),
            tool.count = compiled.len(),
            environment = %options.environment,
            "policies loaded"
        );
        Ok(PolicyEngine {
            schema,
            schema_text,
            environment: options.environment,
            authorizer: Authorizer::new(),
            names,
            tools: compiled,
            start_task,
            delegate,
            read_resource,
            get_prompt,
            server_request,
            call_model,
            routes,
            memory,
            uses_memory,
            policy_count: policies.len(),
            texts: policies
                .iter()
                .map(|entry| {
                    let text = |key: &str| {
                        entry
                            .policy
                            .annotation(key)
                            .filter(|value| !value.trim().is_empty())
                            .map(str::to_owned)
                    };
                    let texts = PolicyTexts {
                        reason: text(crate::load::REASON_ANNOTATION),
                        hold: text(crate::load::HOLD_ANNOTATION),
                    };
                    (entry.policy.id().to_string(), texts)
                })
                .collect(),
        })
    }

    /// Returns the generated schema in Cedar schema syntax.
    pub fn schema_text(&self) -> String {
        self.schema_text.clone()
    }

    /// Returns true when some policy reads `context.memory`; the gateway
    /// keeps task memory only then.
    pub fn uses_memory(&self) -> bool {
        self.uses_memory
    }

    /// Returns the number of loaded policies, hold policies included.
    pub fn policy_count(&self) -> usize {
        self.policy_count
    }

    /// Returns the definition of the tool with this qualified name.
    pub fn tool(&self, qualified: &str) -> Option<&ToolDef> {
        self.tools.get(qualified).map(|tool| &tool.definition)
    }
}

impl TypeNames {
    fn new() -> Result<TypeNames, PolicyLoadError> {
        let name = |base: &str| {
            EntityTypeName::from_str(&format!("{NAMESPACE}::{base}"))
                .map_err(|error| schema_error(&error))
        };
        Ok(TypeNames {
            agent: name("Agent")?,
            server: name("Server")?,
            tool: name("Tool")?,
            resource: name("Resource")?,
            prompt: name("Prompt")?,
            model: name("Model")?,
            route: name("Route")?,
            path: name("Path")?,
            gateway: name("Gateway")?,
            action: name("Action")?,
        })
    }

    fn uid(&self, kind: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
    }
}

impl CompiledTool {
    fn new(
        names: &TypeNames,
        qualified: String,
        arguments: RecordType,
        definition: ToolDef,
        policies: &[LoadedPolicy],
        action_entities: &Entities,
        environment: &str,
    ) -> Result<CompiledTool, PolicyLoadError> {
        let hint = |key: &str, default: bool| {
            definition
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(key))
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        // MCP defaults for absent hints: not read-only, destructive, open world.
        let read_only = hint("readOnlyHint", false);
        let destructive = hint("destructiveHint", true);
        let open_world = hint("openWorldHint", true);

        let server_uid = names.uid(&names.server, &definition.server);
        let uid = names.uid(&names.tool, &qualified);
        let effective_classes = definition.effective_classes();
        let classes = effective_classes
            .iter()
            .map(|class| RestrictedExpression::new_string(class.clone()));
        let labels = definition
            .effective_labels()
            .into_iter()
            .map(RestrictedExpression::new_string);
        let attributes = [
            ("name", RestrictedExpression::new_string(qualified.clone())),
            (
                "server",
                RestrictedExpression::new_string(definition.server.clone()),
            ),
            (
                "tool",
                RestrictedExpression::new_string(definition.name.clone()),
            ),
            ("classes", RestrictedExpression::new_set(classes)),
            ("labels", RestrictedExpression::new_set(labels)),
            ("read_only", RestrictedExpression::new_bool(read_only)),
            ("destructive", RestrictedExpression::new_bool(destructive)),
            ("open_world", RestrictedExpression::new_bool(open_world)),
        ]
        .map(|(name, value)| (name.to_owned(), value));
        let entity = Entity::new_with_tags(uid.clone(), attributes, [server_uid.clone()], [])
            .map_err(|error| PolicyLoadError::Tool {
                tool: qualified.clone(),
                message: error.to_string(),
            })?;
        let scope = ToolScope {
            tool: &uid,
            server: &server_uid,
            facts: guard::StaticFacts {
                name: &qualified,
                server: &definition.server,
                tool: &definition.name,
                classes: &effective_classes,
                read_only,
                destructive,
                open_world,
                environment,
            },
        };
        let call = ActionPolicies::new(names, &qualified, Some(&scope), policies, action_entities)?;
        let list = ActionPolicies::new(names, LIST_TOOLS, Some(&scope), policies, action_entities)?;
        Ok(CompiledTool {
            definition,
            arguments,
            uid,
            entity,
            call,
            list,
        })
    }
}

impl ActionPolicies {
    /// Selects the policies whose action scope can match `action_id` and,
    /// for a tool, whose resource scope can match that tool.
    ///
    /// Leaving out a policy whose scope cannot match changes no decision.
    /// Cedar (4.14) treats such a policy as not applicable, and its scope
    /// checks compare entity ids and ancestors without raising errors.
    fn new(
        names: &TypeNames,
        action_id: &str,
        tool: Option<&ToolScope<'_>>,
        policies: &[LoadedPolicy],
        action_entities: &Entities,
    ) -> Result<ActionPolicies, PolicyLoadError> {
        let uid = names.uid(&names.action, action_id);
        let entity = action_entities
            .get(&uid)
            .cloned()
            .ok_or_else(|| PolicyLoadError::Schema {
                message: format!("action {action_id} is missing from the generated schema"),
            })?;
        let groups: Vec<EntityUid> = action_entities
            .ancestors(&uid)
            .map(|ancestors| ancestors.cloned().collect())
            .unwrap_or_default();

        let action_applies = |policy: &Policy| match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(scope) => scope == uid,
            ActionConstraint::In(scopes) => scopes
                .iter()
                .any(|scope| *scope == uid || groups.contains(scope)),
        };
        // A tool's only ancestor is its server.
        let resource_applies = |policy: &Policy| {
            let Some(tool) = tool else { return true };
            let within = |scope: &EntityUid| scope == tool.tool || scope == tool.server;
            match policy.resource_constraint() {
                ResourceConstraint::Any => true,
                ResourceConstraint::Eq(scope) => scope == *tool.tool,
                ResourceConstraint::In(scope) => within(&scope),
                ResourceConstraint::Is(kind) => kind == names.tool,
                ResourceConstraint::IsIn(kind, scope) => kind == names.tool && within(&scope),
            }
        };
        let possible = |policy: &Policy| match tool {
            Some(tool) => !guard::never_matches(policy, &tool.facts),
            None => true,
        };
        let applies = |policy: &Policy| {
            action_applies(policy) && resource_applies(policy) && possible(policy)
        };
        let select = |hold: bool| {
            PolicySet::from_policies(
                policies
                    .iter()
                    .filter(|entry| entry.hold == hold && applies(&entry.policy))
                    .map(|entry| entry.policy.clone()),
            )
            .map_err(|error| PolicyLoadError::Schema {
                message: format!("failed to index policies for action {action_id}: {error}"),
            })
        };
        let plain = select(false)?;
        Ok(ActionPolicies {
            guarded: guard::GuardedPolicies::new(&plain),
            plain,
            hold: select(true)?,
            uid,
            entity,
        })
    }
}

/// Returns (qualified name, argument record, definition) for each tool,
/// rejecting duplicate qualified names.
fn tool_argument_types(
    tools: &[ToolDef],
) -> Result<Vec<(String, RecordType, &ToolDef)>, PolicyLoadError> {
    let mut seen = HashSet::new();
    let mut result = Vec::with_capacity(tools.len());
    for tool in tools {
        let qualified = tool.qualified_name();
        if !seen.insert(qualified.clone()) {
            return Err(PolicyLoadError::Tool {
                tool: qualified,
                message: "two tool definitions have this qualified name; \
                          rename one server so that every server__tool name is unique"
                    .to_owned(),
            });
        }
        let arguments = arguments_type(&tool.input_schema, tool.path_arguments.as_deref())
            .map_err(|error| PolicyLoadError::Tool {
                tool: qualified.clone(),
                message: format!(
                    "path argument \"{}\" {}; fix path_arguments in the configuration",
                    error.argument, error.problem
                ),
            })?;
        result.push((qualified, arguments, tool));
    }
    Ok(result)
}

/// Collects the class names (standard ones, every tool's and every
/// route's) and summed argument names that `context.memory` carries.
fn memory_shape(tools: &[ToolDef], routes: &[RouteDef]) -> MemoryShape {
    let mut classes: std::collections::BTreeSet<String> = crate::STANDARD_CLASSES
        .iter()
        .map(|class| (*class).to_owned())
        .collect();
    let mut sums = std::collections::BTreeSet::new();
    for tool in tools {
        classes.extend(tool.effective_classes());
        sums.extend(tool.sum_arguments.iter().cloned());
    }
    for route in routes {
        classes.extend(route.classes.iter().cloned());
    }
    MemoryShape {
        classes: classes.into_iter().collect(),
        sums: sums.into_iter().collect(),
    }
}

/// Translates each route's body schema, in the order of `routes`.
fn route_body_types(routes: &[RouteDef]) -> Result<Vec<Option<RecordType>>, PolicyLoadError> {
    let mut seen = HashSet::new();
    let mut types = Vec::with_capacity(routes.len());
    for route in routes {
        if !seen.insert(route.name.as_str()) {
            return Err(PolicyLoadError::Tool {
                tool: route.action(),
                message: "two routes have this name".to_owned(),
            });
        }
        let body =
            match &route.body_schema {
                None => None,
                Some(schema) => Some(arguments_type(schema, None).map_err(|error| {
                    PolicyLoadError::Tool {
                        tool: route.action(),
                        message: format!(
                            "body schema property \"{}\" {}; fix body_schema in the configuration",
                            error.argument, error.problem
                        ),
                    }
                })?),
            };
        types.push(body);
    }
    Ok(types)
}

fn schema_error(error: &dyn std::fmt::Display) -> PolicyLoadError {
    PolicyLoadError::Schema {
        message: error.to_string(),
    }
}
