//! Template operations: create (no review exists here, so a template is `APPROVED` at once),
//! list, get, update, delete, and the render preview that returns exactly what a send of it
//! would carry.

use super::model::{TemplateSpec, Variant, pick};
use super::render::{Params, Rendered, render};
use crate::domain::Gateway;
use crate::domain::auth::Caller;
use crate::domain::text::{no_nul, no_nul_opt};
use crate::error::{Error, Result};
use crate::storage::now_ms;
use crate::storage::templates::{self as store, TemplateRow};
use crate::values::TemplateId;

/// Templates listed per page at most.
pub const MAX_PAGE: i64 = 100;
/// Every template is approved when created: there is no Meta review on a linked device.
pub const APPROVED: &str = "APPROVED";

#[derive(Debug, Clone)]
pub struct TemplateView {
    pub id: TemplateId,
    pub name: String,
    pub category: String,
    pub status: String,
    pub variants: Vec<Variant>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<TemplateRow> for TemplateView {
    type Error = Error;

    fn try_from(r: TemplateRow) -> Result<Self> {
        let variants = serde_json::from_str(&r.variants)
            .map_err(|e| Error::Internal(format!("template {}: stored variants: {e}", r.id)))?;
        Ok(TemplateView {
            id: r.id,
            name: r.name,
            category: r.category,
            status: r.status,
            variants,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// A page of templates and how many there are in all.
#[derive(Debug, Clone)]
pub struct TemplatePage {
    pub templates: Vec<TemplateView>,
    pub total: i64,
}

fn variants_json(v: &[Variant]) -> Result<String> {
    serde_json::to_string(v).map_err(Error::internal)
}

impl Gateway {
    pub async fn create_template(
        &self,
        caller: &Caller,
        spec: TemplateSpec,
    ) -> Result<TemplateView> {
        let spec = spec.validated()?;
        let now = now_ms();
        let row = TemplateRow {
            id: TemplateId::new(uuid::Uuid::now_v7().to_string()),
            project_id: caller.project.row.id.clone(),
            name: spec.name,
            category: spec.category,
            status: APPROVED.into(),
            variants: variants_json(&spec.variants)?,
            created_at: now,
            updated_at: now,
        };
        let stored = row.clone();
        self.db().run(move |c| store::insert(c, &stored)).await?;
        row.try_into()
    }

    /// `skip` templates in, at most `limit` (bounded by [`MAX_PAGE`]); `query` filters by name.
    pub async fn list_templates(
        &self,
        caller: &Caller,
        query: Option<&str>,
        skip: i64,
        limit: i64,
    ) -> Result<TemplatePage> {
        no_nul_opt("query", query)?;
        let p = caller.project.row.id.clone();
        let query = query.filter(|q| !q.is_empty()).map(str::to_owned);
        let (skip, limit) = (skip.max(0), limit.clamp(1, MAX_PAGE));
        let (rows, total) = self
            .db()
            .run(move |c| store::list(c, &p, query.as_deref(), skip, limit))
            .await?;
        Ok(TemplatePage {
            templates: rows
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_>>()?,
            total,
        })
    }

    pub async fn get_template(&self, caller: &Caller, id: &TemplateId) -> Result<TemplateView> {
        no_nul("template id", id)?;
        let (p, id) = (caller.project.row.id.clone(), id.clone());
        self.db()
            .run(move |c| store::get(c, &p, &id))
            .await?
            .ok_or(Error::TemplateNotFound)?
            .try_into()
    }

    /// Replaces the template's name, category and variants; it stays `APPROVED`.
    pub async fn update_template(
        &self,
        caller: &Caller,
        id: &TemplateId,
        spec: TemplateSpec,
    ) -> Result<TemplateView> {
        let spec = spec.validated()?;
        let current = self.get_template(caller, id).await?;
        let row = TemplateRow {
            id: current.id,
            project_id: caller.project.row.id.clone(),
            name: spec.name,
            category: spec.category,
            status: current.status,
            variants: variants_json(&spec.variants)?,
            created_at: current.created_at,
            updated_at: now_ms(),
        };
        let stored = row.clone();
        if !self.db().run(move |c| store::update(c, &stored)).await? {
            return Err(Error::TemplateNotFound);
        }
        row.try_into()
    }

    pub async fn delete_template(&self, caller: &Caller, id: &TemplateId) -> Result<()> {
        no_nul("template id", id)?;
        let (p, id) = (caller.project.row.id.clone(), id.clone());
        if self.db().run(move |c| store::delete(c, &p, &id)).await? {
            Ok(())
        } else {
            Err(Error::TemplateNotFound)
        }
    }

    /// Exactly the message a send of this template with `params` would carry.
    pub async fn render_template(
        &self,
        caller: &Caller,
        id: &TemplateId,
        language: &str,
        params: &Params,
    ) -> Result<Rendered> {
        no_nul("language", language)?;
        let t = self.get_template(caller, id).await?;
        let variant = pick(&t.variants, language).ok_or(Error::TemplateNotFound)?;
        render(variant, params)
    }
}
