"""The UIDs rst names (PS3.6 Annex A): transfer syntaxes, SOP classes, and rst's own
implementation class UID and version name. One home for each; everything else imports them.

Plain strings: pydicom's ``UID`` names are fine where pydicom needs them (its groups of
transfer syntaxes such as ``JPEGTransferSyntaxes`` stay its own), but the values rst compares,
proposes and writes are named here, and pynetdicom's SOP class names exist only at run time
(invisible to type checkers; rst's DIMSE code does not import pynetdicom).
"""

from __future__ import annotations

from rst import __version__

# -- transfer syntaxes ---------------------------------------------------------------------------

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
"""The default transfer syntax of uncompressed data in web services (PS3.18 §8.7.3.3.2)."""
ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
"""Retired, still sent by old modalities."""
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
JPEG_2000_MULTI_COMPONENT_LOSSLESS = "1.2.840.10008.1.2.4.92"
JPEG_2000_MULTI_COMPONENT = "1.2.840.10008.1.2.4.93"
JPIP_REFERENCED_DEFLATE = "1.2.840.10008.1.2.4.95"
JPIP_HTJ2K_REFERENCED_DEFLATE = "1.2.840.10008.1.2.4.205"
MPEG2_PREFIXES = ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101")
"""MPEG-2 Main Profile / High Level and their fragmentable variants (.100.1, .101.1)."""
HEVC = ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108")
"""H.265 Main and Main 10 profiles."""
JPEG_XL = ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112")
"""JPEG XL Lossless, JPEG XL JPEG Recompression, JPEG XL."""
JPEG_XL_LOSSLESS = JPEG_XL[0]
HTJ2K = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
"""High-Throughput JPEG 2000: lossless, lossless RPCL, lossy."""
HTJ2K_LOSSLESS = HTJ2K[0]
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

NATIVE_SYNTAXES = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)
"""Transfer syntaxes whose pixel data is native (not encapsulated): they can be re-encoded
without a codec."""
NOT_IN_PLACE = frozenset(
    {
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        JPIP_REFERENCED_DEFLATE,
        JPIP_HTJ2K_REFERENCED_DEFLATE,
    }
)
"""Transfer syntaxes whose data set cannot be read in place as Little Endian: Big Endian, or
deflated."""
UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
"""What rst proposes for a query/retrieve or verification context, and the fallback it offers
for an uncompressed instance whose own syntax the PACS does not take (rst re-encodes into
either)."""

# -- SOP classes ---------------------------------------------------------------------------------

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
WITHOUT_BULK_DATA_GET = "1.2.840.10008.5.1.4.1.2.5.3"
"""Composite Instance Retrieve Without Bulk Data - GET (PS3.4 Annex Z)."""
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
"""The storage class whose 32- and 64-bit images are Float and Double Float Pixel Data."""

# -- rst itself ----------------------------------------------------------------------------------

IMPLEMENTATION_CLASS_UID = "2.25.218059430470374432734286406437512018779"
"""rst's Implementation Class UID (a UUID-derived UID, PS3.5 B.2): in the association
requests and answers it sends, and in the File Meta Information of the files it writes."""
IMPLEMENTATION_VERSION = f"RST_{__version__}"[:16]
"""rst's Implementation Version Name, next to :data:`IMPLEMENTATION_CLASS_UID` (an SH: at most
16 characters)."""

# -- the storage SOP classes ---------------------------------------------------------------------

GET_STORAGE_CLASSES = 120
"""How many of :data:`STORAGE_CLASSES` a C-GET's broad proposal names (with the SCP role; see
:mod:`rst.backends.dimse.proposal`): an association request has at most 128 presentation
contexts, and C-GET needs one more for itself."""

STORAGE_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.1.27",  # Stored Print Storage SOP Class
    "1.2.840.10008.5.1.1.29",  # Hardcopy Grayscale Image Storage SOP Class
    "1.2.840.10008.5.1.1.30",  # Hardcopy Color Image Storage SOP Class
    "1.2.840.10008.5.1.4.1.1.1",  # ComputedRadiographyImageStorage
    "1.2.840.10008.5.1.4.1.1.1.1",  # DigitalXRayImageStorageForPresentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # DigitalXRayImageStorageForProcessing
    "1.2.840.10008.5.1.4.1.1.1.2",  # DigitalMammographyXRayImageStorageForPresentation
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # DigitalMammographyXRayImageStorageForProcessing
    "1.2.840.10008.5.1.4.1.1.1.3",  # DigitalIntraOralXRayImageStorageForPresentation
    "1.2.840.10008.5.1.4.1.1.1.3.1",  # DigitalIntraOralXRayImageStorageForProcessing
    "1.2.840.10008.5.1.4.1.1.10",  # Standalone Modality LUT Storage
    "1.2.840.10008.5.1.4.1.1.104.1",  # EncapsulatedPDFStorage
    "1.2.840.10008.5.1.4.1.1.104.2",  # EncapsulatedCDAStorage
    "1.2.840.10008.5.1.4.1.1.11",  # Standalone VOI LUT Storage
    "1.2.840.10008.5.1.4.1.1.11.1",  # GrayscaleSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.2",  # ColorSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.3",  # PseudoColorSoftcopyPresentationStageStorage
    "1.2.840.10008.5.1.4.1.1.11.4",  # BlendingSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.5",  # XAXRFGrayscaleSoftcopyPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.12.1",  # XRayAngiographicImageStorage
    "1.2.840.10008.5.1.4.1.1.12.1.1",  # EnhancedXAImageStorage
    "1.2.840.10008.5.1.4.1.1.12.2",  # XRayRadiofluoroscopicImageStorage
    "1.2.840.10008.5.1.4.1.1.12.2.1",  # EnhancedXRFImageStorage
    "1.2.840.10008.5.1.4.1.1.12.3",  # X-Ray Angiographic Bi-Plane Image Storage
    "1.2.840.10008.5.1.4.1.1.128",  # PositronEmissionTomographyImageStorage
    "1.2.840.10008.5.1.4.1.1.128.1",  # LegacyConvertedEnhancedPETImageStorage
    "1.2.840.10008.5.1.4.1.1.129",  # Standalone PET Curve Storage
    "1.2.840.10008.5.1.4.1.1.13.1.1",  # XRay3DAngiographicImageStorage
    "1.2.840.10008.5.1.4.1.1.13.1.2",  # XRay3DCraniofacialImageStorage
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # BreastTomosynthesisImageStorage
    "1.2.840.10008.5.1.4.1.1.130",  # EnhancedPETImageStorage
    "1.2.840.10008.5.1.4.1.1.131",  # BasicStructuredDisplayStorage
    "1.2.840.10008.5.1.4.1.1.14.1",  # IVOCTImageStorageForPresentation
    "1.2.840.10008.5.1.4.1.1.14.2",  # IVOCTImageStorageForProcessing
    "1.2.840.10008.5.1.4.1.1.2",  # CTImageStorage
    "1.2.840.10008.5.1.4.1.1.2.1",  # EnhancedCTImageStorage
    "1.2.840.10008.5.1.4.1.1.2.2",  # LegacyConvertedEnhancedCTImageStorage
    "1.2.840.10008.5.1.4.1.1.20",  # NuclearMedicineImageStorage
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",  # UltrasoundMultiFrameImageStorage
    "1.2.840.10008.5.1.4.1.1.4",  # MRImageStorage
    "1.2.840.10008.5.1.4.1.1.4.1",  # EnhancedMRImageStorage
    "1.2.840.10008.5.1.4.1.1.4.2",  # MRSpectroscopyStorage
    "1.2.840.10008.5.1.4.1.1.4.3",  # EnhancedMRColorImageStorage
    "1.2.840.10008.5.1.4.1.1.4.4",  # LegacyConvertedEnhancedMRImageStorage
    "1.2.840.10008.5.1.4.1.1.481.1",  # RTImageStorage
    "1.2.840.10008.5.1.4.1.1.481.2",  # RTDoseStorage
    "1.2.840.10008.5.1.4.1.1.481.3",  # RTStructureSetStorage
    "1.2.840.10008.5.1.4.1.1.481.4",  # RTBeamsTreatmentRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.5",  # RTPlanStorage
    "1.2.840.10008.5.1.4.1.1.481.6",  # RTBrachyTreatmentRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.7",  # RTTreatmentSummaryRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.8",  # RTIonPlanStorage
    "1.2.840.10008.5.1.4.1.1.481.9",  # RTIonBeamsTreatmentRecordStorage
    "1.2.840.10008.5.1.4.1.1.5",  # Nuclear Medicine Image Storage
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.6.1",  # UltrasoundImageStorage
    "1.2.840.10008.5.1.4.1.1.6.2",  # EnhancedUSVolumeStorage
    "1.2.840.10008.5.1.4.1.1.66",  # RawDataStorage
    "1.2.840.10008.5.1.4.1.1.66.1",  # SpatialRegistrationStorage
    "1.2.840.10008.5.1.4.1.1.66.2",  # SpatialFiducialsStorage
    "1.2.840.10008.5.1.4.1.1.66.3",  # DeformableSpatialRegistrationStorage
    "1.2.840.10008.5.1.4.1.1.66.4",  # SegmentationStorage
    "1.2.840.10008.5.1.4.1.1.66.5",  # SurfaceSegmentationStorage
    "1.2.840.10008.5.1.4.1.1.67",  # RealWorldValueMappingStorage
    "1.2.840.10008.5.1.4.1.1.68.1",  # SurfaceScanMeshStorage
    "1.2.840.10008.5.1.4.1.1.68.2",  # SurfaceScanPointCloudStorage
    "1.2.840.10008.5.1.4.1.1.7",  # SecondaryCaptureImageStorage
    "1.2.840.10008.5.1.4.1.1.7.1",  # MultiFrameSingleBitSecondaryCaptureImageStorage
    "1.2.840.10008.5.1.4.1.1.7.2",  # MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    "1.2.840.10008.5.1.4.1.1.7.3",  # MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    "1.2.840.10008.5.1.4.1.1.7.4",  # MultiFrameTrueColorSecondaryCaptureImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1",  # VL Image Storage - Trial
    "1.2.840.10008.5.1.4.1.1.77.1.1",  # VLEndoscopicImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # VideoEndoscopicImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.2",  # VLMicroscopicImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.2.1",  # VideoMicroscopicImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.3",  # VLSlideCoordinatesMicroscopicImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VLPhotographicImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # VideoPhotographicImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.5.1",  # OphthalmicPhotography8BitImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.5.2",  # OphthalmicPhotography16BitImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.5.3",  # StereometricRelationshipStorage
    "1.2.840.10008.5.1.4.1.1.77.1.5.4",  # OphthalmicTomographyImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.6",  # VLWholeSlideMicroscopyImageStorage
    "1.2.840.10008.5.1.4.1.1.77.2",  # VL Multi-frame Image Storage - Trial
    "1.2.840.10008.5.1.4.1.1.78.1",  # LensometryMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.2",  # AutorefractionMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.3",  # KeratometryMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.4",  # SubjectiveRefractionMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.5",  # VisualAcuityMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.6",  # SpectaclePrescriptionReportStorage
    "1.2.840.10008.5.1.4.1.1.78.7",  # OphthalmicAxialMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.78.8",  # IntraocularLensCalculationsStorage
    "1.2.840.10008.5.1.4.1.1.79.1",  # MacularGridThicknessAndVolumeReportStorage
    "1.2.840.10008.5.1.4.1.1.8",  # Standalone Overlay Storage
    "1.2.840.10008.5.1.4.1.1.80.1",  # OphthalmicVisualFieldStaticPerimetryMeasurementsStorage
    "1.2.840.10008.5.1.4.1.1.81.1",  # OphthalmicThicknessMapStorage
    "1.2.840.10008.5.1.4.1.1.88.11",  # BasicTextSRStorage
    "1.2.840.10008.5.1.4.1.1.88.22",  # EnhancedSRStorage
    "1.2.840.10008.5.1.4.1.1.88.33",  # ComprehensiveSRStorage
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive3DSRStorage
    "1.2.840.10008.5.1.4.1.1.88.40",  # ProcedureLogStorage
    "1.2.840.10008.5.1.4.1.1.88.50",  # MammographyCADSRStorage
    "1.2.840.10008.5.1.4.1.1.88.59",  # KeyObjectSelectionDocumentStorage
    "1.2.840.10008.5.1.4.1.1.88.65",  # ChestCADSRStorage
    "1.2.840.10008.5.1.4.1.1.88.67",  # XRayRadiationDoseSRStorage
    "1.2.840.10008.5.1.4.1.1.88.69",  # ColonCADSRStorage
    "1.2.840.10008.5.1.4.1.1.88.70",  # ImplantationPlanSRStorage
    "1.2.840.10008.5.1.4.1.1.9",  # Standalone Curve Storage
    "1.2.840.10008.5.1.4.1.1.9.1.1",  # TwelveLeadECGWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.1.2",  # GeneralECGWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.1.3",  # AmbulatoryECGWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.2.1",  # HemodynamicWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.3.1",  # CardiacElectrophysiologyWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.4.1",  # BasicVoiceAudioWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.4.2",  # GeneralAudioWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.5.1",  # ArterialPulseWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.6.1",  # RespiratoryWaveformStorage
    "1.2.840.10008.5.1.4.34.7",  # RTBeamsDeliveryInstructionStorage
    "1.2.840.10008.5.1.4.1.1.104.3",  # EncapsulatedSTLStorage
    "1.2.840.10008.5.1.4.1.1.104.4",  # EncapsulatedOBJStorage
    "1.2.840.10008.5.1.4.1.1.104.5",  # EncapsulatedMTLStorage
    "1.2.840.10008.5.1.4.1.1.11.10",  # SegmentedVolumeRenderingVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.11",  # MultipleVolumeRenderingVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.12",  # VariableModalityLUTSoftcopyPresentationStageStorage
    "1.2.840.10008.5.1.4.1.1.11.6",  # GrayscalePlanarMPRVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.7",  # CompositingPlanarMPRVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.8",  # AdvancedBlendingPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.11.9",  # VolumeRenderingVolumetricPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.13.1.4",  # BreastProjectionXRayImageStorageForPresentation
    "1.2.840.10008.5.1.4.1.1.13.1.5",  # BreastProjectionXRayImageStorageForProcessing
    "1.2.840.10008.5.1.4.1.1.200.2",  # CTPerformedProcedureProtocolStorage
    "1.2.840.10008.5.1.4.1.1.200.8",  # XAPerformedProcedureProtocolStorage
    "1.2.840.10008.5.1.4.1.1.30",  # ParametricMapStorage
    "1.2.840.10008.5.1.4.1.1.481.10",  # RTPhysicianIntentStorage
    "1.2.840.10008.5.1.4.1.1.481.11",  # RTSegmentAnnotationStorage
    "1.2.840.10008.5.1.4.1.1.481.12",  # RTRadiationSetStorage
    "1.2.840.10008.5.1.4.1.1.481.13",  # CArmPhotonElectronRadiationStorage
    "1.2.840.10008.5.1.4.1.1.481.14",  # TomotherapeuticRadiationStorage
    "1.2.840.10008.5.1.4.1.1.481.15",  # RoboticArmRadiationStorage
    "1.2.840.10008.5.1.4.1.1.481.16",  # RTRadiationRecordSetStorage
    "1.2.840.10008.5.1.4.1.1.481.17",  # RTRadiationSalvageRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.18",  # TomotherapeuticRadiationRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.19",  # CArmPhotonElectronRadiationRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.20",  # RoboticArmRadiationRecordStorage
    "1.2.840.10008.5.1.4.1.1.481.21",  # RTRadiationSetDeliveryInstructionStorage
    "1.2.840.10008.5.1.4.1.1.481.22",  # RTTreatmentPreparationStorage
    "1.2.840.10008.5.1.4.1.1.481.23",  # EnhancedRTImageStorage
    "1.2.840.10008.5.1.4.1.1.481.24",  # EnhancedContinuousRTImageStorage
    "1.2.840.10008.5.1.4.1.1.481.25",  # RTPatientPositionAcquisitionInstructionStorage
    "1.2.840.10008.5.1.4.1.1.6.3",  # PhotoacousticImageStorage
    "1.2.840.10008.5.1.4.1.1.66.6",  # TractographyResultsStorage
    "1.2.840.10008.5.1.4.1.1.66.7",  # LabelMapSegmentationStorage
    "1.2.840.10008.5.1.4.1.1.66.8",  # HeightMapSegmentationStorage
    "1.2.840.10008.5.1.4.1.1.77.1.5.5",  # WideFieldOphthalmicPhotographyStereographicProjection
    "1.2.840.10008.5.1.4.1.1.77.1.5.6",  # WideFieldOphthalmicPhotography3DCoordinatesImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.5.7",  # OphthalmicOpticalCoherenceTomographyEnFaceImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.5.8",  # OphthalmicOCTBscanVolumeAnalysisStorage
    "1.2.840.10008.5.1.4.1.1.77.1.7",  # DermoscopicPhotographyImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.8",  # ConfocalMicroscopyImageStorage
    "1.2.840.10008.5.1.4.1.1.77.1.9",  # ConfocalMicroscopyTiledPyramidalImageStorage
    "1.2.840.10008.5.1.4.1.1.82.1",  # CornealTopographyMapStorage
    "1.2.840.10008.5.1.4.1.1.88.35",  # ExtensibleSRStorage
    "1.2.840.10008.5.1.4.1.1.88.68",  # RadiopharmaceuticalRadiationDoseSRStorage
    "1.2.840.10008.5.1.4.1.1.88.71",  # AcquisitionContextSRStorage
    "1.2.840.10008.5.1.4.1.1.88.72",  # SimplifiedAdultEchoSRStorage
    "1.2.840.10008.5.1.4.1.1.88.73",  # PatientRadiationDoseSRStorage
    "1.2.840.10008.5.1.4.1.1.88.74",  # PlannedImagingAgentAdministrationSRStorage
    "1.2.840.10008.5.1.4.1.1.88.75",  # PerformedImagingAgentAdministrationSRStorage
    "1.2.840.10008.5.1.4.1.1.88.76",  # EnhancedXRayRadiationDoseSRStorage
    "1.2.840.10008.5.1.4.1.1.88.77",  # WaveformAnnotationSRStorage
    "1.2.840.10008.5.1.4.1.1.9.1.4",  # General32bitECGWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.100.1",  # WaveformPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.9.100.2",  # WaveformAcquisitionPresentationStateStorage
    "1.2.840.10008.5.1.4.1.1.9.6.2",  # MultichannelRespiratoryWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.7.1",  # RoutineScalpElectroencephalogramWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.7.2",  # ElectromyogramWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.7.3",  # ElectrooculogramWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.7.4",  # SleepElectroencephalogramWaveformStorage
    "1.2.840.10008.5.1.4.1.1.9.8.1",  # BodyPositionWaveformStorage
    "1.2.840.10008.5.1.4.1.1.90.1",  # ContentAssessmentResultsStorage
    "1.2.840.10008.5.1.4.1.1.91.1",  # MicroscopyBulkSimpleAnnotationsStorage
    "1.2.840.10008.5.1.4.34.10",  # RTBrachyApplicationSetupDeliveryInstructionsStorage
)
"""The storage SOP classes the receiver accepts: the first :data:`GET_STORAGE_CLASSES` are the
common ones (pynetdicom's ``StoragePresentationContexts``, in its order, retired ones included:
old archives still hold them), then the rest of pynetdicom's
``AllStoragePresentationContexts``."""
